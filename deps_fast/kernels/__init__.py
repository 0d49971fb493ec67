"""Triton kernels (no autograd). Imported lazily by deps_fast.ops, so TRITON_INTERPRET set before first use
of the triton backend still takes effect. This file imports no triton, so asking `interpreting()` is free."""
import os


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
