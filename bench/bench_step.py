"""Training-step throughput: images/s of a DεpS shrinking step (max + min + 2 random subnets, forward,
backward, optimizer) and of an FM-Warmup step (max net only), fused backends vs `--backend torch`, with the
same model, batch, precision and subnets. The ratio is the kernels' end-to-end gain.

    python bench/bench_step.py                       # GPU if present: mbv3-cifar N=256 @32, mbv3 N=64 @224, bf16
    python bench/bench_step.py --device cpu --quick  # CPU: smaller batches, fp32
    python bench/bench_step.py --device cpu --profile --label before   # where the demo's step spends its time
    python bench/bench_step.py --device cpu --peer ofa --label before  # vs once-for-all's own OFAMobileNetV3

Each step is the trainer's own `train_step` (deps_fast/trainer/step.py) driven by a DεpS schedule's plan.

--profile: torch.profiler over a few DεpS shrinking steps of the demo's model (mbv3-cifar at width 0.35, k = 7,
28 px digits, batch 64), time shares by category (bench/step_profile.py) for each backend.
--peer ofa: once-for-all's own network (PyPI `ofa`, bench/ofa_peer.py) doing the same sandwich step (max, min,
2 random subnets; mbv3 at 64 px, batch 16, the same configs), interleaved with ours in one process (ours in the
trainer's layout; OFA as shipped, NCHW, and given channels_last inputs), with the fp32
GEMM rate measured in the same run and the share of it each step reaches (forward + backward = 3x forward FLOPs).
Both default to one thread (--threads).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import step_profile  # noqa: E402

from deps_fast._util import prefers_channels_last  # noqa: E402
from deps_fast.models import build_supernet  # noqa: E402
from deps_fast.schedules import deps  # noqa: E402
from deps_fast.trainer.step import parameter_groups, step_subnets, train_step  # noqa: E402

# (space, batch, resolution, classes): the shapes; --quick shrinks batch (and 224 px) for CPUs
SETUPS = {"mbv3-cifar": (256, 32, 10), "mbv3": (64, 224, 1000)}
QUICK = {"mbv3-cifar": (64, 32, 10), "mbv3": (8, 128, 1000)}
# The demo's model (deps_fast.train's defaults): mbv3-cifar at width 0.35, DεpS's fixed k = 7, 1-channel 28 px digits
DEMO = dict(space="mbv3-cifar", width_mult=0.35, kernel_sizes=(7,), in_channels=1, resolution=28, classes=10)
# The peer comparison: OFA's MobileNetV3 space (k 3/5/7, e 3/4/6, d 2/3/4) at 64 px, batch 16
PEER = dict(space="mbv3", width_mult=1.0, kernel_sizes=(3, 5, 7), in_channels=3, resolution=64, classes=1000)


def step_plans(steps_per_epoch: int = 10):
    sched = deps(4, lr=0.1, steps_per_epoch=steps_per_epoch)
    last = sched.total_steps() - 1
    return {"fm_warmup": sched.plan(0), "deps_shrink": sched.plan(last)}


def step_runner(space, batch, res, classes, backend, plan, device, amp_dtype, channels_last, *, width_mult=1.0,
                kernel_sizes=(3, 5, 7), in_channels=3):
    """(model, run(i)): one trainer step of `plan` on a fixed random batch."""
    torch.manual_seed(0)
    net = build_supernet(space, classes, width_mult, kernel_sizes, in_channels=in_channels).to(device)
    net.set_backend(backend)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(parameter_groups(net, 3e-5), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, in_channels, res, res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(classes, (batch,), device=device)
    run = lambda i: train_step(net, opt, plan, [(x, y)], seed=0, label_smoothing=0.1,  # noqa: E731
                               amp_dtype=amp_dtype)
    return net, run


def measure(space, batch, res, classes, backend, plan, device, amp_dtype, channels_last, warmup, repeats):
    _, run = step_runner(space, batch, res, classes, backend, plan, device, amp_dtype, channels_last)
    return harness.time_ms(run, device, warmup=warmup, repeats=repeats)


def gemm_gflops(device: torch.device, n: int = 1024, repeats: int = 7) -> float:
    """fp32 matrix-multiply rate (GFLOP/s) of this device at the current thread count: the ceiling the step's
    FLOPs are compared with."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    ms = harness.time_ms(lambda i: torch.mm(a, b), device, warmup=2, repeats=repeats)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def step_gflop(net, plan, batch: int, res: int) -> float:
    """FLOPs of one sandwich step: forward + backward (3x the forward's 2 x MACs) of every net it runs."""
    configs = [net.max_config()] + [c for _, c in step_subnets(net, plan, 0)]
    return sum(3 * 2 * net.flops(c, res) * batch for c in configs) / 1e9


def run_profile(args, device, plan) -> list[dict]:
    """--profile: category shares of the demo's DεpS shrinking step for each backend."""
    d = DEMO
    layouts = {"both": [False, True], "on": [True], "off": [False], "auto": [prefers_channels_last(device)]}
    runs, rows = [], []
    for backend in args.backends.split(","):
        for channels_last in layouts[args.channels_last]:
            _, run = step_runner(d["space"], args.batch or 64, d["resolution"], d["classes"], backend, plan,
                                 device, None, channels_last, width_mult=d["width_mult"],
                                 kernel_sizes=d["kernel_sizes"], in_channels=d["in_channels"])
            prof = step_profile.profile_step(run, steps=args.repeats or 3, warmup=1)
            layout = "channels_last" if channels_last else "nchw"
            rows.append({"model": "demo", "backend": backend, "layout": layout, "batch": args.batch or 64,
                         "threads": torch.get_num_threads(), **prof})
            runs.append(run)
            line = "  ".join(f"{k} {v:.1%}" for k, v in prof["share"].items())
            print(f"{backend:>6} {layout:>13}: {prof['wall_ms_per_step']:8.1f} ms/step (profiled)  {line}",
                  flush=True)
    # the profiler slows ops unevenly and runs one configuration after another: time them again unprofiled,
    # interleaved (each round runs every configuration once), median of the rounds
    times = [[] for _ in runs]
    for r in range(args.repeats or 3):
        for run, ts in zip(runs, times):
            t0 = time.perf_counter()
            run(r)
            ts.append((time.perf_counter() - t0) * 1e3)
    for row, ts in zip(rows, times):
        row["ms_unprofiled"] = round(statistics.median(ts), 1)
        print(f"{row['backend']:>6} {row['layout']:>13}: {row['ms_unprofiled']:8.1f} ms/step (unprofiled, "
              f"interleaved)", flush=True)
    return rows


def run_peer(args, device, plan) -> list[dict]:
    """--peer ofa: our backends and OFA's own network on the same sandwich step, interleaved."""
    import ofa_peer

    why = ofa_peer.available()
    if why is not None:
        raise SystemExit(f"--peer ofa: {why}")
    d, batch = PEER, args.batch or 16
    cl = prefers_channels_last(device)  # ours as the trainer runs it
    contenders = {}
    for backend in args.backends.split(","):
        net, run = step_runner(d["space"], batch, d["resolution"], d["classes"], backend, plan, device, None, cl,
                               width_mult=d["width_mult"], kernel_sizes=d["kernel_sizes"])
        contenders[backend] = run
    ours = net
    subnets = [c for _, c in step_subnets(ours, plan, 0)]
    torch.manual_seed(0)
    peer = ofa_peer.build(d["classes"], d["width_mult"], d["kernel_sizes"], ours.expand_ratios, ours.depths)
    peer = peer.to(device).train()
    groups = [{"params": [p for p in peer.parameters() if p.dim() > 1], "weight_decay": 3e-5},
              {"params": [p for p in peer.parameters() if p.dim() <= 1], "weight_decay": 0.0}]
    peer_opt = torch.optim.SGD(groups, lr=0.001, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, d["resolution"], d["resolution"], device=device)
    y = torch.randint(d["classes"], (batch,), device=device)
    # OFA as shipped (NCHW), and the same network given channels_last inputs (its convs then run on NHWC too)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    contenders["ofa"] = lambda i: ofa_peer.sandwich_step(peer, peer_opt, x, y, ours.max_config(), subnets, 0.1)
    contenders["ofa-channels-last"] = lambda i: ofa_peer.sandwich_step(peer, peer_opt, x_cl, y, ours.max_config(),
                                                                       subnets, 0.1)
    gflop = step_gflop(ours, plan, batch, d["resolution"])
    repeats = args.repeats or 7
    times = {name: [] for name in contenders}
    gemm = [gemm_gflops(device)]
    for name, run in contenders.items():  # warm-up: allocator, oneDNN primitive caches
        run(0)
        run(1)
    for r in range(repeats):  # interleaved: each round times every contender once
        for name, run in contenders.items():
            harness.sync(device)
            t0 = time.perf_counter()
            run(r)
            harness.sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
        if r % 3 == 2:
            gemm.append(gemm_gflops(device))
    gemm_rate = statistics.median(gemm)
    ofa_ms = statistics.median(times["ofa"])
    ofa_cl_ms = statistics.median(times["ofa-channels-last"])
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts)
        layout = "channels_last" if (name == "ofa-channels-last" or (name != "ofa" and cl)) else "nchw"
        rows.append({"model": f"{d['space']} @ {d['resolution']} px", "contender": name, "layout": layout,
                     "batch": batch,
                     "threads": torch.get_num_threads(), "ms": round(ms, 2), "ms_all": [round(t, 2) for t in ts],
                     "images_per_s": round(batch / ms * 1e3, 1), "speedup_vs_ofa": round(ofa_ms / ms, 3),
                     "speedup_vs_ofa_channels_last": round(ofa_cl_ms / ms, 3),
                     "step_gflop": round(gflop, 3), "gflops": round(gflop / ms * 1e3, 2),
                     "gemm_gflops": round(gemm_rate, 1), "share_of_gemm": round(gflop / ms * 1e3 / gemm_rate, 4)})
        print(f"{name:>17} ({layout}): {ms:8.1f} ms  x{ofa_ms / ms:.2f} vs ofa  x{ofa_cl_ms / ms:.2f} vs "
              f"ofa-channels-last  {gflop / ms * 1e3:6.1f} GFLOP/s = "
              f"{gflop / ms * 1e3 / gemm_rate:.1%} of fp32 GEMM ({gemm_rate:.0f} GFLOP/s)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--spaces", default="mbv3-cifar,mbv3")
    p.add_argument("--quick", action="store_true", help="smaller batches (CPU)")
    p.add_argument("--amp", choices=("auto", "off", "bf16"), default="auto", help="auto: bf16 on GPU, off on CPU")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--profile", action="store_true", help="profile the demo's DεpS shrinking step (categories)")
    p.add_argument("--peer", choices=("ofa",), help="compare with once-for-all's own network (PyPI `ofa`)")
    p.add_argument("--backends", default=None, help="--profile / --peer: backends to run (default cpp,torch on "
                                                    "CPU; the fast ones and torch on a GPU)")
    p.add_argument("--batch", type=int, default=None, help="--profile: default 64; --peer: default 16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (--profile / --peer default: 1)")
    p.add_argument("--channels-last", choices=("auto", "off", "on", "both"), default="auto",
                   help="--profile: model and input layout (auto: the trainer's, channels_last on CPU and GPU)")
    p.add_argument("--label", default="", help="suffix of the result file names, e.g. before / after")
    args = p.parse_args()
    device = torch.device(args.device)
    threads = args.threads or (1 if (args.profile or args.peer) else None)
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    if args.profile or args.peer:
        args.backends = args.backends or ",".join(harness.fast_backends(device) + ["torch"])
        plan = step_plans()["deps_shrink"]
        rows = run_profile(args, device, plan) if args.profile else run_peer(args, device, plan)
        env = harness.environment(device)
        env["command"] = "python bench/bench_step.py " + " ".join(sys.argv[1:])
        env["threads"] = torch.get_num_threads()
        name = ("step-profile" if args.profile else "step-peer-ofa") + (f"-{args.label}" if args.label else "")
        print("results:", harness.write_results(name, env, rows, args.out))
        return
    amp_dtype = {"off": None, "bf16": torch.bfloat16,
                 "auto": torch.bfloat16 if device.type == "cuda" else None}[args.amp]
    channels_last = prefers_channels_last(device)  # as the trainer runs
    repeats = args.repeats or (10 if device.type == "cuda" else 3)
    warmup = 3 if device.type == "cuda" else 1
    backends = ["torch"] + harness.fast_backends(device)
    rows = []
    for space in args.spaces.split(","):
        batch, res, classes = (QUICK if args.quick else SETUPS)[space]
        for kind, plan in step_plans().items():
            times = {}
            for backend in backends:
                ms = measure(space, batch, res, classes, backend, plan, device, amp_dtype, channels_last, warmup,
                             repeats)
                times[backend] = ms
                rows.append({"space": space, "step": kind, "batch": batch, "resolution": res, "backend": backend,
                             "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
                             "ms": round(ms, 3), "images_per_s": round(batch / ms * 1e3, 1),
                             "speedup_vs_torch": round(times["torch"] / ms, 3)})
                print(f"{space:>10} {kind:>11} N={batch} {res}px {backend:>6}: {ms:9.1f} ms  "
                      f"{batch / ms * 1e3:8.1f} img/s  x{times['torch'] / ms:.2f} vs torch", flush=True)
    env = harness.environment(device)
    env["command"] = "python bench/bench_step.py " + " ".join(sys.argv[1:])
    print("results:", harness.write_results("step", env, rows, args.out))


if __name__ == "__main__":
    main()
