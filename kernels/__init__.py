"""Triton kernels of deps_fast (no autograd), installed as `deps_fast.kernels` from the repository's top-level
`kernels/` folder. deps_fast.ops imports them on the first call of the triton backend, so TRITON_INTERPRET set
before that call still takes effect, and a broken Triton makes only that backend unavailable."""
