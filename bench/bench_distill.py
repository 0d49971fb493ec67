"""Fused distillation loss: deps_fast backends vs eager PyTorch (log_softmax + soft CE + cross_entropy),
forward+backward time, and peak memory on GPU (torch.cuda.max_memory_allocated above the inputs).

    python bench/bench_distill.py                 # GPU if present, else CPU; bf16 and fp32
    python bench/bench_distill.py --device cpu

Shapes: B=256 with V in {10, 100, 1000} (CIFAR/ImageNet heads) and B=64, V=32000. Each call is the
supernet's subnet loss: soft CE against a teacher plus label-smoothed CE (both terms, T=1, eps=0.1).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from deps_fast import ops, reference  # noqa: E402

SHAPES = [(256, 10), (256, 100), (256, 1000), (64, 32000)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def implementations(device, compile_eager: bool) -> dict:
    impls = {"eager": lambda s, t, y: reference.distillation_loss(s, t, y, label_smoothing=0.1)}
    if compile_eager:
        impls["eager+torch.compile"] = torch.compile(impls["eager"])
    for name in harness.fast_backends(device):
        impls[f"deps_fast[{name}]"] = (lambda b: lambda s, t, y: ops.distillation_loss(
            s, t, y, label_smoothing=0.1, backend=b))(name)
    return impls


def run_case(fn, B, V, dtype, device, repeats):
    sets = []
    for _ in range(3):  # rotate inputs
        s = torch.randn(B, V, device=device, dtype=dtype, requires_grad=True)
        sets.append((s, torch.randn(B, V, device=device, dtype=dtype), torch.randint(0, V, (B,), device=device)))

    def step(i):
        s, t, y = sets[i % len(sets)]
        torch.autograd.grad(fn(s, t, y), s)

    ms = harness.time_ms(step, device, warmup=5, repeats=repeats)
    peak_mb = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(0)
        torch.cuda.synchronize(device)
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return ms, peak_mb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the eager version")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats or (50 if device.type == "cuda" else 10)
    env = harness.environment(device)
    impls = implementations(device, args.compile)
    rows = []
    print(f"{env['device']} | torch {env['torch']} | triton {env['triton']}")
    print(f"{'B':>4} {'V':>6} {'dtype':>5} {'implementation':22} {'fwd+bwd ms':>11} {'vs eager':>9} {'peak MB':>9}")
    for dtype_name in args.dtypes:
        for B, V in SHAPES:
            eager_ms = None
            for name, fn in impls.items():
                ms, peak = run_case(fn, B, V, DTYPES[dtype_name], device, repeats)
                eager_ms = eager_ms or ms
                rows.append(dict(B=B, V=V, dtype=dtype_name, impl=name, ms=round(ms, 4),
                                 speedup_vs_eager=round(eager_ms / ms, 2),
                                 peak_mb=None if peak is None else round(peak, 2)))
                peak_txt = "n/a" if peak is None else f"{peak:.1f}"
                print(f"{B:>4} {V:>6} {dtype_name:>5} {name:22} {ms:>11.3f} {eager_ms / ms:>8.2f}x {peak_txt:>9}")
    print(f"wrote {harness.write_results('distill', env, rows, args.out)}")


if __name__ == "__main__":
    main()
