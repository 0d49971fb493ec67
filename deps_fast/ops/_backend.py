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


_TRITON_STATE: list = []  # [{name: (module, error)}] once probed; a plain list, not lru_cache, so torch.compile traces it
# The kernel modules every op needs ("triton" is unavailable without them) and those only one op needs (their
# absence makes the triton backend unavailable for that op alone: see op_kernels_reason).
_TRITON_MODULES = ("depthwise", "distill")
_TRITON_OP_MODULES = ("bn_act",)


def triton_kernels():
    """{name: module} of the Triton kernel modules that import, on first use; None when a core one cannot."""
    state = _probe_triton()
    if any(state[name][0] is None for name in _TRITON_MODULES):
        return None
    return {name: module for name, (module, _) in state.items() if module is not None}


def _triton_import_error(name: Optional[str] = None) -> Optional[str]:
    """Why the core Triton modules (or the module `name`) cannot be imported; None if they can."""
    state = _probe_triton()
    for module in (name,) if name else _TRITON_MODULES:
        error = state[module][1]
        if error:
            return error
    return None


def _probe_triton() -> dict:
    if not _TRITON_STATE:
        state = {}
        for name in _TRITON_MODULES + _TRITON_OP_MODULES:  # one by one: a missing op module spares the others
            try:
                state[name] = (importlib.import_module(f"deps_fast.kernels.{name}"), None)
            except Exception as exc:  # noqa: BLE001 - no triton, a broken install or an old triton: say which
                state[name] = (None, f"the Triton kernels cannot be imported (deps_fast.kernels.{name}: "
                                     f"{type(exc).__name__}: {exc})")
        _TRITON_STATE.append(state)
    return _TRITON_STATE[0]


def op_kernels_reason(backend: str, triton_module: str, functions: tuple, ext_functions: tuple) -> Optional[str]:
    """Why `backend` lacks the kernels of one op (None if it has them): the Triton module `triton_module` with
    `functions`, or the compiled extension's `ext_functions` (names without the _cpu / _cuda suffix)."""
    if backend == "triton":
        error = _triton_import_error(triton_module)
        if error:
            return error
        module = _probe_triton()[triton_module][0]
        missing = [f for f in functions if not hasattr(module, f)]
        return f"deps_fast.kernels.{triton_module} lacks {missing}" if missing else None
    if backend in ("cpp", "cuda"):
        ext = _ext.extension()
        suffix = "_cpu" if backend == "cpp" else "_cuda"
        missing = [f + suffix for f in ext_functions if ext is None or not hasattr(ext, f + suffix)]
        return f"deps_fast._C was built without {missing} (rebuild the extension)" if missing else None
    return None


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
