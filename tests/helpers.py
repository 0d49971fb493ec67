"""Shared test helpers: which backends can run here, and tolerances derived from the reference's own error."""
import os

import pytest
import torch

from deps_fast import _ext
from deps_fast.ops import _backend


def seed() -> int:
    """A fresh seed per test (reported in failure messages); DEPS_FAST_TEST_SEED pins one to reproduce."""
    return int(os.environ.get("DEPS_FAST_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))


def backend_device(name: str) -> str:
    """The device a backend is tested on: GPU backends need CUDA; triton runs on CPU in the interpreter."""
    if name == "cuda":
        return "cuda"
    if name == "triton":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def require_backend(name: str) -> str:
    """Skip only for missing hardware. A missing compiled extension is a failure, not a skip."""
    device = backend_device(name)
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"backend {name!r} needs a CUDA device; none on this machine")
    if name in ("cpp", "cuda") and _ext.extension() is None:
        pytest.fail(f"backend {name!r}: {_ext.extension_error()}")
    reason = _backend.device_reason(name, torch.device(device))
    if reason:
        pytest.fail(f"backend {name!r} unexpectedly unavailable: {reason}")
    return device


def assert_matches_truth(name, ours, reference_lowp, truth, dtype, factor=2.0):
    """ours must be as close to the float64 truth as the reference computed in `dtype` is, times `factor`,
    plus a floor of a few ulps of the largest value (for cases where the reference happens to be exact)."""
    assert ours.shape == truth.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    assert not torch.isnan(ours).any(), f"{name}: NaN in output (unwritten element or overflow)"
    ours64, ref64, truth64 = ours.double().cpu(), reference_lowp.double().cpu(), truth.double().cpu()
    ref_err = (ref64 - truth64).abs().max().item()
    our_err = (ours64 - truth64).abs().max().item()
    scale = truth64.abs().max().item() + 1.0
    floor = 4 * torch.finfo(dtype).eps * scale
    assert our_err <= factor * ref_err + floor, (
        f"{name}: max error {our_err:.3g} vs truth; reference in {dtype} errs {ref_err:.3g}; "
        f"allowed {factor * ref_err + floor:.3g}")
