"""pytest-benchmark microbenchmarks of the elastic depthwise conv (one layer shape per stage, e = 6):

    pytest bench/test_depthwise_benchmark.py --benchmark-enable --benchmark-group-by=param:shape,param:mode

Each group compares deps_fast backends with PyTorch eager on the same shape. bench_depthwise.py gives the
full sweep with GB/s and bandwidth shares.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_depthwise  # noqa: E402
import shapes  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
DTYPE = torch.bfloat16 if GPU else torch.float32
IMPLS = bench_depthwise.implementations(DEVICE)
LAYERS = [layer for space, res in (("mbv3", 224), ("mbv3-cifar", 32))
          for layer in shapes.depthwise_layers(space, res) if layer["block"] == "other" and layer["e"] == 6]


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("shape", LAYERS, ids=lambda l: f"{l['space']}-s{l['stage']}-c{l['c']}-{l['hw']}px")
def test_depthwise(benchmark, impl, layout, mode, k, shape):
    batch = (128 if shape["space"] == "mbv3" else 256) if GPU else (4 if shape["space"] == "mbv3" else 16)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(batch, shape["c"], shape["hw"], shape["hw"], device=DEVICE, dtype=DTYPE).contiguous(memory_format=fmt)
    w = torch.randn(shape["c"], 1, 7, 7, device=DEVICE)
    fn = IMPLS[impl]
    if mode == "fwdbwd":
        x.requires_grad_()
        w.requires_grad_()
    gy = fn(x.detach(), w.detach(), k, shape["stride"]).contiguous(memory_format=fmt).normal_()

    def step():
        y = fn(x, w, k, shape["stride"])
        if mode == "fwdbwd":
            torch.autograd.grad(y, (x, w), gy)
        if GPU:
            torch.cuda.synchronize()

    benchmark(step)
