"""Fused elastic BatchNorm + activation: deps_fast backends vs eager PyTorch (prefix slices + F.batch_norm +
the activation), training forward and forward+backward (grads of x, weight and bias), at the BN shapes of a
real supernet.

    python bench/bench_bn_act.py                         # the demo: mbv3-cifar x0.35, 28 px, N=128, fp32
    python bench/bench_bn_act.py --device cuda --dtype bf16 --space mbv3 --width-mult 1 --resolution 224 --batch 64

The shapes are read off the network: every BN call of the max subnet and of the min subnet (c < C_max there),
with its activation; each distinct (c, C_max, H, W, act) is timed once and weighted by how often one
training step of those two subnets calls it, giving the per-step totals at the end. GB/s counts the fewest
bytes: forward reads x twice (statistics, then normalise) and writes y; forward+backward adds reading
grad_y and x twice and writing grad_x.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from deps_fast import ops, reference  # noqa: E402
from deps_fast.models import build_supernet  # noqa: E402
from deps_fast.models.layers import ElasticBatchNorm2d  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bn_shapes(space: str, width_mult: float, resolution: int, batch: int) -> collections.Counter:
    """Counter {(N, c, C_max, H, W, act): calls} over one forward of the max and of the min subnet."""
    net = build_supernet(space, num_classes=10, width_mult=width_mult).set_backend("torch")
    calls: collections.Counter = collections.Counter()

    def hook(module, inputs):
        x = inputs[0]
        act = inputs[1] if len(inputs) > 1 else "none"
        calls[(batch, x.shape[1], module.num_features, x.shape[2], x.shape[3], act)] += 1

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, ElasticBatchNorm2d)]
    with torch.no_grad():
        for config in (net.max_config(), net.min_config()):
            net(torch.zeros(1, 3, resolution, resolution), config)
    for h in handles:
        h.remove()
    return calls


def eager(x, w, b, rm, rv, act):
    c = x.shape[1]
    y = F.batch_norm(x, rm[:c], rv[:c], w[:c], b[:c], True, 0.1, 1e-5)
    return reference.apply_activation(y, act)


def implementations(device) -> dict:
    impls = {"eager": eager}
    for name in harness.fast_backends(device) + ["torch"]:
        impls[f"deps_fast[{name}]"] = (lambda be: lambda x, w, b, rm, rv, act: ops.elastic_batch_norm_act(
            x, w, b, rm, rv, training=True, activation=act, backend=be))(name)
    return impls


def run_case(fn, shape, dtype, device, repeats, backward: bool) -> float:
    N, c, C, H, W, act = shape
    sets = []
    for _ in range(3):  # rotate inputs
        x = (torch.randn(N, c, H, W, device=device) + 0.5).to(dtype).requires_grad_(backward)
        sets.append((x, torch.randn_like(x)))
    w = (1 + 0.1 * torch.randn(C, device=device)).requires_grad_(backward)
    b = (0.1 * torch.randn(C, device=device)).requires_grad_(backward)
    rm, rv = torch.zeros(C, device=device), torch.ones(C, device=device)

    def step(i):
        x, g = sets[i % len(sets)]
        y = fn(x, w, b, rm, rv, act)
        if backward:
            torch.autograd.grad(y, (x, w, b), g)

    return harness.time_ms(step, device, warmup=3, repeats=repeats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--space", default="mbv3-cifar")
    p.add_argument("--width-mult", type=float, default=0.35)
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    repeats = args.repeats or (50 if device.type == "cuda" else 15)
    env = harness.environment(device)
    env.update(space=args.space, width_mult=args.width_mult, resolution=args.resolution, batch=args.batch,
               dtype=args.dtype)
    bandwidth = harness.copy_bandwidth_gbs(device)
    impls = implementations(device)
    shapes = bn_shapes(args.space, args.width_mult, args.resolution, args.batch)
    rows = []
    totals: dict = collections.defaultdict(float)
    item = torch.tensor([], dtype=dtype).element_size()
    print(f"{env['device']} | torch {env['torch']} | {args.space} x{args.width_mult} {args.resolution}px "
          f"N={args.batch} {args.dtype} | copy bandwidth {bandwidth:.1f} GB/s")
    print(f"{'c/C_max':>9} {'HxW':>7} {'act':>7} {'calls':>5} {'implementation':18} {'fwd ms':>8} {'vs eager':>8} "
          f"{'fwd+bwd ms':>10} {'vs eager':>8} {'GB/s':>6}")
    for shape, calls in sorted(shapes.items(), key=lambda kv: (-kv[0][3], kv[0][1])):
        N, c, C, H, W, act = shape
        base = {}
        for name, fn in impls.items():
            fwd = run_case(fn, shape, dtype, device, repeats, backward=False)
            both = run_case(fn, shape, dtype, device, repeats, backward=True)
            base = base or {"fwd": fwd, "both": both}
            gbs = N * c * H * W * item * 8 / (both * 1e-3) / 1e9
            totals[(name, "fwd")] += calls * fwd
            totals[(name, "both")] += calls * both
            rows.append(dict(N=N, c=c, C_max=C, H=H, W=W, act=act, calls=calls, impl=name, fwd_ms=round(fwd, 4),
                             fwd_speedup_vs_eager=round(base["fwd"] / fwd, 2), fwd_bwd_ms=round(both, 4),
                             fwd_bwd_speedup_vs_eager=round(base["both"] / both, 2), fwd_bwd_gbs=round(gbs, 2),
                             copy_bandwidth_share=round(gbs / bandwidth, 3)))
            print(f"{c:>4}/{C:<4} {H:>3}x{W:<3} {act:>7} {calls:>5} {name:18} {fwd:>8.3f} {base['fwd'] / fwd:>7.2f}x "
                  f"{both:>10.3f} {base['both'] / both:>7.2f}x {gbs:>6.1f}")
    print("per training step of the max + min subnet (each shape x its calls):")
    for name in impls:
        fwd, both = totals[(name, "fwd")], totals[(name, "both")]
        ratio_f, ratio_b = totals[("eager", "fwd")] / fwd, totals[("eager", "both")] / both
        print(f"  {name:18} fwd {fwd:8.2f} ms ({ratio_f:.2f}x eager)   fwd+bwd {both:8.2f} ms ({ratio_b:.2f}x eager)")
        rows.append(dict(N=args.batch, c="all", C_max="all", H="all", W="all", act="all", calls=sum(shapes.values()),
                         impl=name, fwd_ms=round(fwd, 3), fwd_speedup_vs_eager=round(ratio_f, 2),
                         fwd_bwd_ms=round(both, 3), fwd_bwd_speedup_vs_eager=round(ratio_b, 2), fwd_bwd_gbs=None,
                         copy_bandwidth_share=None))
    env["copy_bandwidth_gbs"] = round(bandwidth, 2)
    print(f"wrote {harness.write_results('bn-act', env, rows, args.out)}")


if __name__ == "__main__":
    main()
