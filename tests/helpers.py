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


def _log_ratio(name: str, ratio: float) -> None:
    """DEPS_FAST_TOL_LOG=FILE appends every comparison's error/allowed ratio (to measure the margin)."""
    path = os.environ.get("DEPS_FAST_TOL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{ratio:.4f}\t{name}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}\n")


def assert_matches_truth(name, ours, reference_lowp, truth, dtype, factor=2.0):
    """ours must be as close to the float64 truth as the reference computed in `dtype` is, times `factor`,
    element by element and relative to the data's own size.

    Every element i is measured against |truth_i| + m, where m = mean |truth| is the data's magnitude: a
    relative error for large elements, an absolute one of about m * (relative error) for tiny ones. The
    reference's worst error on that scale, r = max_i |ref_i - truth_i| / (|truth_i| + m), but at least one
    ulp of `dtype` plus float32 reordering noise (the reference may happen to be exact), sets the budget: |ours_i - truth_i| <=
    factor * r * (|truth_i| + m). An all-zero gradient or accumulating in bf16 instead of float32 errs far
    beyond r; a constant absolute floor (e.g. ulps of 1.0) would hide both when the values are small."""
    assert ours.shape == truth.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    assert not torch.isnan(ours).any(), f"{name}: NaN in output (unwritten element or overflow)"
    ours64, ref64, truth64 = ours.double().cpu(), reference_lowp.double().cpu(), truth.double().cpu()
    if truth64.numel() == 0:
        return
    magnitude = max(truth64.abs().mean().item(), torch.finfo(torch.float32).tiny)
    scale = truth64.abs() + magnitude
    # at least one ulp of dtype (the Triton interpreter rounds to bf16 by truncation), plus the float32 noise of
    # long sums in another order and of vectorized exp (a few ulps, amplified where p_s - p_t cancels)
    r_min = torch.finfo(dtype).eps + 64 * torch.finfo(torch.float32).eps
    r = max(((ref64 - truth64).abs() / scale).max().item(), r_min)
    ratio_per_element = (ours64 - truth64).abs() / (factor * r * scale)
    worst = int(ratio_per_element.argmax())
    ratio = ratio_per_element.flatten()[worst].item()
    _log_ratio(name, ratio)
    assert ratio <= 1.0, (
        f"{name}: error {ratio:.3g}x the allowed at flat index {worst} (ours {ours64.flatten()[worst].item():.6g}, "
        f"truth {truth64.flatten()[worst].item():.6g}); reference in {dtype} errs up to {r:.3g} of "
        f"(|truth| + mean |truth| = {magnitude:.3g}), allowed {factor:g}x that")
