"""pytest-benchmark microbenchmarks of the fused distillation loss, forward+backward:

    pytest bench/test_distill_benchmark.py --benchmark-enable --benchmark-group-by=param:shape,param:dtype

Each group compares deps_fast backends with the eager composition on one (B, V); bench_distill.py gives the
full table with GPU peak memory.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_distill  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
IMPLS = bench_distill.implementations(DEVICE, compile_eager=False)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", bench_distill.SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_distill(benchmark, impl, dtype, shape):
    B, V = shape
    s = torch.randn(B, V, device=DEVICE, dtype=bench_distill.DTYPES[dtype], requires_grad=True)
    t = torch.randn(B, V, device=DEVICE, dtype=s.dtype)
    y = torch.randint(0, V, (B,), device=DEVICE)
    fn = IMPLS[impl]

    def step():
        torch.autograd.grad(fn(s, t, y), s)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark(step)
