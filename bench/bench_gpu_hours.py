"""GPU-hours side by side: DεpS, OFA and BigNAS on the same data with the paper's relative budgets
(270 : 605 : 400 epochs) scaled by one factor; each run evaluates min, max and the six uniform k7 subnets
(BN recalibrated) and measures device-hours (training wall time x devices). Writes the paper's Table 1
layout (comparison.md), pareto.png and each run's report under one results folder.

    python bench/bench_gpu_hours.py --budget-scale 0.05 --data cifar10          # a meaningful GPU run
    python bench/bench_gpu_hours.py --budget-scale 0.004 --device cpu            # minutes on a CPU, embedded digits
    python bench/bench_gpu_hours.py ... -- --width-mult 1.0 --batch-size 256     # extra trainer options after --

All three runs share every option except the schedule (and its default kernel choices: OFA trains elastic
kernels {3,5,7}; DεpS and BigNAS fix k = 7 as the DεpS authors do; pass --kernel-sizes to override for all).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from deps_fast.trainer.loop import train  # noqa: E402
from deps_fast.trainer.options import parse_options  # noqa: E402
from deps_fast.trainer.report import combine, summary_row  # noqa: E402

SCHEDULES = ("deps", "ofa", "bignas")


def run_all(budget_scale: float, data: str, device: str, out: Path, extra: list[str],
            schedules=SCHEDULES) -> dict:
    reports = {}
    for schedule in schedules:
        argv = ["--schedule", schedule, "--budget-scale", str(budget_scale), "--data", data, "--device", device,
                "--out", str(out / schedule)] + extra
        command = f"python -m deps_fast.train {' '.join(argv)}"
        print(f"== {schedule}: {command}", flush=True)
        reports[schedule] = train(parse_options(argv), command=command)
    return reports


def main(argv=None) -> Path:
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra = args_in[args_in.index("--") + 1:] if "--" in args_in else []
    args_in = args_in[: args_in.index("--")] if "--" in args_in else args_in
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-scale", type=float, default=0.004, help="fraction of the paper's epochs (all three)")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="default bench/results/gpu-hours-<device>-<date>")
    args = p.parse_args(args_in)
    import torch

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    env = harness.environment(device)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out or Path(__file__).parent / "results" / f"gpu-hours-{harness.slug(env['device'])}-{stamp}")
    reports = run_all(args.budget_scale, args.data, args.device, out, extra)
    paths = combine([reports[s] for s in SCHEDULES], out)
    env["command"] = "python bench/bench_gpu_hours.py " + " ".join(args_in + (["--"] + extra if extra else []))
    summary = {"env": env, "budget_scale": args.budget_scale, "data": args.data,
               "table1": [summary_row(reports[s]) for s in SCHEDULES]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(Path(paths["markdown"]).read_text())
    return out


if __name__ == "__main__":
    main()
