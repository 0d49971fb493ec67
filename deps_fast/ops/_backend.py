"""Backend choice for every deps_fast op.

Backends: "cuda" (CUDA C++ in csrc/), "triton" (deps_fast.kernels, the repository's kernels/), "cpp" (C++ CPU in csrc/), "torch"
(deps_fast/reference.py). `backend="auto"` asks the environment variable DEPS_FAST_BACKEND first, then the
rule in `_AUTO_ORDER`. An explicitly requested backend that cannot take the inputs raises BackendUnavailable
with the reason; "auto" silently falls through to the next candidate, "torch" takes everything.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

import importlib

from deps_fast import _ext
from deps_fast._util import triton_interpreting

BACKENDS = ("cuda", "triton", "cpp", "torch")
ENV_VAR = "DEPS_FAST_BACKEND"
FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the cuda, triton and cpp kernels take

# The auto rule, per device type, fastest first. CPU: measured by bench/bench_depthwise.py (see
# bench/results/ and the README's Performance section). CUDA: cuda before triton by design, since the
# hand-written kernels are specialised per kernel size; not yet measured on a GPU (no GPU was available
# when this rule was written) -- re-check with bench/ on the first GPU run.
_AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run the given inputs; the message says why."""


_TRITON_STATE: list = []  # [(modules, error)] once probed; a plain list, not lru_cache, so torch.compile traces it
_TRITON_MODULES = ("depthwise", "distill")


def triton_kernels():
    """{name: module} of the Triton kernel modules, imported on first use; None when they cannot be imported."""
    return _probe_triton()[0]


def _triton_import_error() -> Optional[str]:
    return _probe_triton()[1]


def _probe_triton() -> tuple:
    if not _TRITON_STATE:
        try:
            modules = {name: importlib.import_module(f"deps_fast.kernels.{name}") for name in _TRITON_MODULES}
            _TRITON_STATE.append((modules, None))
        except Exception as exc:  # noqa: BLE001 - no triton, a broken install or an old triton: say which
            _TRITON_STATE.append((None, f"the Triton kernels cannot be imported ({type(exc).__name__}: {exc})"))
    return _TRITON_STATE[0]


def device_reason(backend: str, device: torch.device) -> Optional[str]:
    """Why `backend` cannot run on `device` at all (None if it can)."""
    if backend == "torch":
        return None
    if backend == "cpp":
        if _ext.extension() is None:
            return _ext.extension_error()
        return None if device.type == "cpu" else f"the cpp backend runs on CPU tensors, got device {device}"
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend needs CUDA tensors, got device {device}"
        if _ext.extension() is None:
            return _ext.extension_error()
        if not _ext.has_cuda_kernels():
            return "deps_fast._C was built without CUDA kernels (no CUDA toolkit or CPU-only torch at build time)"
        return None
    if backend == "triton":
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreting()):
            return _triton_import_error()
        return (f"the triton backend needs CUDA tensors (got device {device}); on CPU it runs only in the Triton "
                "interpreter, with TRITON_INTERPRET=1 set before deps_fast is imported")
    raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")


def kernel_input_reason(name: str, tensor: torch.Tensor, empty: bool) -> Callable[[str], Optional[str]]:
    """For resolve(): the kernel backends take FAST_DTYPES and non-empty inputs; "torch" takes anything."""
    def reason(backend: str) -> Optional[str]:
        if backend == "torch":
            return None
        if tensor.dtype not in FAST_DTYPES:
            return f"{name}.dtype {tensor.dtype} is not supported (float32, bfloat16, float16)"
        return f"{name} is empty" if empty else None
    return reason


def requested(backend: str) -> str:
    """Validate a backend name; "auto" is replaced by DEPS_FAST_BACKEND when that is set."""
    if not isinstance(backend, str) or backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"{ENV_VAR} must be one of {('auto',) + BACKENDS}, got {env!r}")
            return env
    return backend


def resolve(backend: str, device: torch.device, input_reason: Callable[[str], Optional[str]]) -> str:
    """The concrete backend to run. `input_reason(name)` says why a backend cannot take these inputs, or None."""
    name = requested(backend)
    if name != "auto":
        reason = device_reason(name, device) or input_reason(name)
        if reason:
            raise BackendUnavailable(f"backend {name!r} cannot run this call: {reason}")
        return name
    for candidate in _AUTO_ORDER.get(device.type, ("torch",)):
        if device_reason(candidate, device) is None and input_reason(candidate) is None:
            return candidate
    return "torch"


def available(device: str | torch.device = "cpu") -> dict:
    """{backend: None if usable on `device` else the reason}, for users and bug reports."""
    device = torch.device(device)
    return {name: device_reason(name, device) for name in BACKENDS}
