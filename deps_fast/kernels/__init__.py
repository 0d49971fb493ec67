"""Triton kernels (no autograd). Imported lazily by deps_fast.ops, so TRITON_INTERPRET set before first use
of the triton backend still takes effect."""
