"""Training-step throughput: images/s of a DεpS shrinking step (max + min + 2 random subnets, forward,
backward, optimizer) and of an FM-Warmup step (max net only), fused backends vs `--backend torch`, with the
same model, batch, precision and subnets. The ratio is the kernels' end-to-end gain.

    python bench/bench_step.py                       # GPU if present: mbv3-cifar N=256 @32, mbv3 N=64 @224, bf16
    python bench/bench_step.py --device cpu --quick  # CPU: smaller batches, fp32

Each step is the trainer's own `train_step` (deps_fast/trainer/step.py) driven by a DεpS schedule's plan.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from deps_fast.models import build_supernet  # noqa: E402
from deps_fast.schedules import deps  # noqa: E402
from deps_fast.trainer.step import parameter_groups, train_step  # noqa: E402

# (space, batch, resolution, classes): the shapes; --quick shrinks batch (and 224 px) for CPUs
SETUPS = {"mbv3-cifar": (256, 32, 10), "mbv3": (64, 224, 1000)}
QUICK = {"mbv3-cifar": (64, 32, 10), "mbv3": (8, 128, 1000)}


def step_plans(steps_per_epoch: int = 10):
    sched = deps(4, lr=0.1, steps_per_epoch=steps_per_epoch)
    last = sched.total_steps() - 1
    return {"fm_warmup": sched.plan(0), "deps_shrink": sched.plan(last)}


def measure(space, batch, res, classes, backend, plan, device, amp_dtype, channels_last, warmup, repeats):
    torch.manual_seed(0)
    net = build_supernet(space, classes, kernel_sizes=(3, 5, 7)).to(device).set_backend(backend)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(parameter_groups(net, 3e-5), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, res, res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(classes, (batch,), device=device)
    run = lambda i: train_step(net, opt, plan, [(x, y)], seed=0, label_smoothing=0.1,  # noqa: E731
                               amp_dtype=amp_dtype)
    return harness.time_ms(run, device, warmup=warmup, repeats=repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--spaces", default="mbv3-cifar,mbv3")
    p.add_argument("--quick", action="store_true", help="smaller batches (CPU)")
    p.add_argument("--amp", choices=("auto", "off", "bf16"), default="auto", help="auto: bf16 on GPU, off on CPU")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args()
    device = torch.device(args.device)
    amp_dtype = {"off": None, "bf16": torch.bfloat16,
                 "auto": torch.bfloat16 if device.type == "cuda" else None}[args.amp]
    channels_last = device.type == "cuda"
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
