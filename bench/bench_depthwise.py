"""Elastic depthwise convolution: deps_fast backends vs PyTorch eager (NCHW) and channels_last (cuDNN on GPU,
oneDNN on CPU), forward and forward+backward, over the real depthwise layer shapes of mbv3 and mbv3-cifar.

    python bench/bench_depthwise.py                     # GPU if present (bf16), else CPU (fp32, small batch)
    python bench/bench_depthwise.py --device cpu --quick

Prints a summary (geometric-mean speedups per space and kernel size, achieved GB/s and the share of the
copy bandwidth measured in the same run) and writes every measurement to bench/results/*.json and *.csv.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import shapes  # noqa: E402

from deps_fast import ops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def eager(x, weight, k, stride):
    """What a PyTorch user writes: slice + crop the shared weight, then a grouped conv (cuDNN for channels_last)."""
    c, o = x.shape[1], (weight.shape[-1] - k) // 2
    return F.conv2d(x, weight[:c, :, o:o + k, o:o + k].to(x.dtype), None, stride, k // 2, 1, c)


def implementations(device: torch.device, compile_eager: bool = False) -> dict:
    impls = {"eager": eager}
    if compile_eager:  # what torch.compile makes of the same slice + conv (one graph per shape)
        impls["eager+torch.compile"] = torch.compile(eager)
    for name in harness.fast_backends(device):
        impls[f"deps_fast[{name}]"] = (lambda b: lambda x, w, k, s: ops.elastic_depthwise_conv2d(x, w, k, s, backend=b))(name)
    return impls


def bytes_moved(x: torch.Tensor, y_numel: int, mode: str) -> int:
    """Fewest bytes: forward reads x, writes y; backward reads gy twice and x once, writes gx (weights ~0)."""
    b = x.element_size()
    fwd = (x.numel() + y_numel) * b
    return fwd if mode == "fwd" else fwd + (2 * y_numel + 2 * x.numel()) * b


def measure(fn, layer, k, mode, dtype, device, batch, channels_last, repeats):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    c, hw, s = layer["c"], layer["hw"], layer["stride"]
    sets = []
    for _ in range(2 if device.type == "cuda" else 1):  # rotate inputs so repeats do not run from a warm cache
        x = torch.randn(batch, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=fmt)
        w = torch.randn(c + 8, 1, 7, 7, device=device)  # the supernet weight is float32 and wider than c
        if mode == "fwdbwd":
            x.requires_grad_()
            w.requires_grad_()
        sets.append((x, w))
    oh = (hw - 1) // s + 1
    gy = torch.randn(batch, c, oh, oh, device=device, dtype=dtype).contiguous(memory_format=fmt)

    def run(i):
        x, w = sets[i % len(sets)]
        y = fn(x, w, k, s)
        if mode == "fwdbwd":
            torch.autograd.grad(y, (x, w), gy)

    ms = harness.time_ms(run, device, warmup=3, repeats=repeats)
    return ms, bytes_moved(sets[0][0], gy.numel(), mode)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--spaces", nargs="+", default=["mbv3", "mbv3-cifar"], choices=["mbv3", "mbv3-cifar"])
    p.add_argument("--kernels", nargs="+", type=int, default=[3, 5, 7])
    p.add_argument("--batch", type=int, default=None, help="default: the issue's N (128 mbv3, 256 cifar) on GPU; "
                                                           "8 and 32 on CPU")
    p.add_argument("--quick", action="store_true", help="only e=6 of the non-first blocks (5 shapes per space)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the eager version")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if gpu else "fp32")]
    repeats = args.repeats or (20 if gpu else 5)
    env = harness.environment(device)
    env["copy_gbs"] = copy_gbs = harness.copy_bandwidth_gbs(device)
    impls = implementations(device, args.compile)
    env["command"] = "python bench/bench_depthwise.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | {dtype} | copy {copy_gbs:.0f} GB/s")

    rows = []
    for space in args.spaces:
        resolution = 224 if space == "mbv3" else 32
        batch = args.batch or {("mbv3", True): 128, ("mbv3-cifar", True): 256,
                               ("mbv3", False): 8, ("mbv3-cifar", False): 32}[(space, gpu)]
        layers = shapes.depthwise_layers(space, resolution)
        if args.quick:
            layers = [layer for layer in layers if layer["block"] == "other" and layer["e"] == 6]
        for layer in layers:
            for k in args.kernels:
                for mode in ("fwd", "fwdbwd"):
                    for name, fn in impls.items():
                        for cl in (False, True):
                            ms, nbytes = measure(fn, layer, k, mode, dtype, device, batch, cl, repeats)
                            gbs = nbytes / (ms * 1e-3) / 1e9
                            rows.append(dict(layer, k=k, batch=batch, dtype=str(dtype)[6:], mode=mode, impl=name,
                                             layout="channels_last" if cl else "nchw", ms=round(ms, 4),
                                             gbs=round(gbs, 1), copy_frac=round(gbs / copy_gbs, 3)))
                print(f"  {space} stage {layer['stage']} {layer['block']:5} e{layer['e']} c={layer['c']:4} "
                      f"{layer['hw']:3}px s{layer['stride']} done", flush=True)
    path = harness.write_results("depthwise", env, rows, args.out)
    print(summary(rows, copy_gbs))
    print(f"wrote {path}")


def summary(rows, copy_gbs) -> str:
    """Per space, mode and k: geometric-mean time ratio of each implementation vs eager NCHW and vs eager
    channels_last (>1 = faster than that baseline), and mean share of the copy bandwidth."""
    key = lambda r: (r["space"], r["stage"], r["block"], r["e"], r["k"], r["mode"])  # noqa: E731
    base = {(key(r), r["layout"]): r["ms"] for r in rows if r["impl"] == "eager"}
    groups = {}
    for r in rows:
        g = groups.setdefault((r["space"], r["mode"], r["k"], r["impl"], r["layout"]), [])
        g.append((base[(key(r), "nchw")] / r["ms"], base[(key(r), "channels_last")] / r["ms"], r["copy_frac"]))
    lines = [f"{'space':10} {'mode':6} {'k':>2} {'implementation':28} {'vs eager NCHW':>14} {'vs eager CL':>12} "
             f"{'copy BW share':>14}"]
    for (space, mode, k, impl, layout), vals in sorted(groups.items()):
        gm = lambda i: math.exp(sum(math.log(v[i]) for v in vals) / len(vals))  # noqa: E731
        share = sum(v[2] for v in vals) / len(vals)
        lines.append(f"{space:10} {mode:6} {k:>2} {impl + ' ' + layout:28} {gm(0):>13.2f}x {gm(1):>11.2f}x "
                     f"{share:>13.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
