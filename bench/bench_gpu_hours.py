"""The savings study: accuracy against device-hours for DεpS, OFA and BigNAS, several budgets and seeds, on one
data set, model, batch and device; optionally the paper's DεpS ablations.

    python bench/bench_gpu_hours.py --budget-scales 0.002,0.004,0.008 --seeds 0,1,2 --device cpu --threads 1
    python bench/bench_gpu_hours.py --budget-scales 0.02,0.05,0.1 --seeds 0,1,2 --data cifar10 -- --preset cifar10
    python bench/bench_gpu_hours.py ... --ablations -- --calib-images 500      # extra trainer options after --

Every run is an ordinary trainer run in its own folder (<out>/<variant>-b<scale>-s<seed>/): rerunning the study
skips finished runs (report.json) and resumes interrupted ones (--resume from their checkpoints). Budgets are
fractions of each schedule's full budget (the paper's 270 : 605 : 400 epochs unless a preset says otherwise), so
one scale trains DεpS, OFA and BigNAS for the paper's relative budgets. Per run: device-hours, D2-E3-K7 top-1
(the paper's "smallest"), the mean of the uniform K7 subnets, max top-1 (docs/method.md §6). Outputs in <out>:
study.json (every run, the aggregates, the matched-accuracy costs), study.md (tables), study.png (accuracy vs
device-hours with error bars over seeds, D2-E3-K7 and mean panels).

Matched-accuracy cost: for each DεpS budget, the device-hours a baseline needs to reach the accuracy DεpS
reaches there, interpolated linearly along the baseline's curve (seed-mean device-hours against seed-mean
accuracy, budgets in order; first crossing), or "not reached within the budgets run"; the spread comes from
doing the same per seed (DεpS seed i against the baseline's seed-i curve).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from deps_fast.trainer import checkpoint as ckpt  # noqa: E402
from deps_fast.trainer.loop import train  # noqa: E402
from deps_fast.trainer.options import parse_options  # noqa: E402
from deps_fast.trainer.report import load_report, summary_row  # noqa: E402

SCHEDULES = ("deps", "ofa", "bignas")
# The paper's ablations of DεpS (run at the middle budget): no ε-shrinking (β = 1 as soon as shrinking starts)
# and FM-Warmup fractions other than 0.5.
ABLATIONS = {"deps-no-eps": ["--eps-epochs", "0"], "deps-fm0.25": ["--fm-fraction", "0.25"],
             "deps-fm0.75": ["--fm-fraction", "0.75"]}
METRICS = ("smallest_top1", "mean_top1", "largest_top1")
METRIC_NAMES = {"smallest_top1": "D2-E3-K7 top-1", "mean_top1": "mean top-1 (uniform K7)",
                "largest_top1": "max top-1"}


# ------------------------------------------------------------------------------------------------- the runs
def run_one(folder: Path, argv: list) -> dict:
    """One trainer run in `folder`: skipped when finished, resumed when interrupted."""
    if (folder / "report.json").is_file():
        print(f"== {folder.name}: finished earlier, reused", flush=True)
        return load_report(folder / "report.json")
    if folder.exists():
        if ckpt.list_checkpoints(folder / "checkpoints"):
            argv = argv + ["--resume"]
        else:  # started but saved nothing: nothing to keep
            shutil.rmtree(folder)
    command = "python -m deps_fast.train " + " ".join(argv)
    print(f"== {folder.name}: {command}", flush=True)
    report = train(parse_options(argv), command=command)
    if report is None:
        raise RuntimeError(f"{folder}: the run stopped before finishing (signal?); rerun the study to resume it")
    return report


def plan_runs(scales, seeds, schedules, ablations: bool) -> list:
    """(variant, schedule flags, scale, seed) of every run; ablations at the middle budget."""
    runs = [(s, ["--schedule", s], scale, seed) for scale in scales for s in schedules for seed in seeds]
    if ablations:
        middle = sorted(scales)[len(scales) // 2]
        runs += [(name, ["--schedule", "deps", *flags], middle, seed)
                 for name, flags in ABLATIONS.items() for seed in seeds]
    return runs


def record(variant: str, scale: float, seed: int, report: dict) -> dict:
    row = summary_row(report)
    return {"variant": variant, "budget_scale": scale, "seed": seed, "device_hours": row["device_hours"],
            "epochs": row["epochs"], **{m: row[m] for m in METRICS}, "min_top1": row["min_top1"],
            "comparison": row["comparison"], "training_resolution": row["training_resolution"],
            "run": report["run"]["name"]}


# --------------------------------------------------------------------------------------------- aggregation
def mean_std(values: list) -> tuple:
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list) -> list:
    groups: dict = {}
    for r in records:
        groups.setdefault((r["variant"], r["budget_scale"]), []).append(r)
    out = []
    for (variant, scale), rows in sorted(groups.items()):
        entry = {"variant": variant, "budget_scale": scale, "seeds": len(rows), "epochs": rows[0]["epochs"]}
        for key in ("device_hours",) + METRICS:
            entry[key], entry[key + "_std"] = mean_std([r[key] for r in rows])
        out.append(entry)
    return out


def hours_to_reach(curve: list, target: float):
    """Device-hours at which a curve [(hours, accuracy)] in budget order first reaches `target`: linear
    interpolation between the two budgets around the first crossing; (hours, "at or below the smallest budget")
    when its first point already does; None when it never does."""
    if not curve:
        return None
    if curve[0][1] >= target:
        return curve[0][0], "reached at or below the smallest budget run"
    for (h0, a0), (h1, a1) in zip(curve, curve[1:]):
        if a0 < target <= a1:
            return h0 + (target - a0) / (a1 - a0) * (h1 - h0), "interpolated"
    return None


def matched_costs(records: list, aggregates: list, baselines=("ofa", "bignas")) -> list:
    """For each DεpS budget and metric: device-hours each baseline needs to match DεpS, and the ratio to
    DεpS's own device-hours, from the seed means and per seed (the spread)."""
    by_variant = {}
    for a in aggregates:
        by_variant.setdefault(a["variant"], []).append(a)
    per_seed = {}
    for r in records:
        per_seed.setdefault((r["variant"], r["seed"]), []).append(r)
    rows = []
    for deps_point in sorted(by_variant.get("deps", []), key=lambda a: a["budget_scale"]):
        for baseline in baselines:
            if baseline not in by_variant:
                continue
            for metric in METRICS[:2]:
                curve = [(a["device_hours"], a[metric]) for a in sorted(by_variant[baseline],
                                                                         key=lambda a: a["budget_scale"])]
                found = hours_to_reach(curve, deps_point[metric])
                ratios = []
                for seed in sorted({r["seed"] for r in records if r["variant"] == "deps"}):
                    mine = [r for r in per_seed.get(("deps", seed), []) if r["budget_scale"] == deps_point["budget_scale"]]
                    theirs = sorted(per_seed.get((baseline, seed), []), key=lambda r: r["budget_scale"])
                    if not mine or not theirs:
                        continue
                    hit = hours_to_reach([(r["device_hours"], r[metric]) for r in theirs], mine[0][metric])
                    ratios.append(None if hit is None else hit[0] / mine[0]["device_hours"])
                reached = [x for x in ratios if x is not None]
                rows.append({
                    "deps_budget_scale": deps_point["budget_scale"], "metric": metric, "baseline": baseline,
                    "deps_accuracy": deps_point[metric], "deps_device_hours": deps_point["device_hours"],
                    "baseline_device_hours": None if found is None else found[0],
                    "how": "not reached within the budgets run" if found is None else found[1],
                    "ratio": None if found is None else found[0] / deps_point["device_hours"],
                    "ratio_per_seed": ratios, "seeds_reached": f"{len(reached)}/{len(ratios)}",
                    "ratio_seed_mean": statistics.fmean(reached) if reached else None,
                    "ratio_seed_std": statistics.stdev(reached) if len(reached) > 1 else None})
    return rows


def differences(aggregates: list) -> list:
    """DεpS minus each baseline at the same budget scale, and whether the difference exceeds twice its
    standard error over seeds (otherwise it is within the seed spread)."""
    by_key = {(a["variant"], a["budget_scale"]): a for a in aggregates}
    rows = []
    for (variant, scale), a in sorted(by_key.items()):
        if variant == "deps":
            continue
        d = by_key.get(("deps", scale))
        if d is None:
            continue
        for metric in METRICS:
            diff = d[metric] - a[metric]
            se = math.sqrt(d[metric + "_std"] ** 2 / d["seeds"] + a[metric + "_std"] ** 2 / a["seeds"])
            rows.append({"budget_scale": scale, "other": variant, "metric": metric, "deps_minus_other": diff,
                         "standard_error": se,
                         "verdict": "beyond the seed spread" if abs(diff) > 2 * se and se > 0 else
                         "within the seed spread"})
    return rows


# ------------------------------------------------------------------------------------------------- outputs
def _pm(mean, std, digits=2):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def render(study: dict) -> str:
    lines = ["# Savings study: accuracy against device-hours", "",
             f"Device: {study['env']['device']} · data {study['data']} · budgets {study['budget_scales']} of each "
             f"schedule's full budget · seeds {study['seeds']} · {study['env']['date']}", "",
             f"Command: `{study['env']['command']}`", "",
             "## Mean ± std over seeds", "",
             "| variant | budget | epochs | device-hours | D2-E3-K7 top-1 | mean top-1 (uniform K7) | max top-1 |",
             "|---|---|---|---|---|---|---|"]
    for a in study["aggregates"]:
        lines.append(f"| {a['variant']} | {a['budget_scale']:g} | {a['epochs']:.3g} | "
                     f"{_pm(a['device_hours'], a['device_hours_std'], 4)} | "
                     f"{_pm(a['smallest_top1'], a['smallest_top1_std'])} | {_pm(a['mean_top1'], a['mean_top1_std'])}"
                     f" | {_pm(a['largest_top1'], a['largest_top1_std'])} |")
    lines += ["", "## Device-hours a baseline needs to match DεpS", "",
              "| DεpS budget | metric | DεpS top-1 | DεpS device-hours | baseline | baseline device-hours | "
              "ratio (seed means) | ratio per seed: mean ± std (seeds reached) |", "|---|---|---|---|---|---|---|---|"]
    for m in study["matched"]:
        hours = "not reached" if m["baseline_device_hours"] is None else f"{m['baseline_device_hours']:.4f}"
        ratio = "–" if m["ratio"] is None else f"{m['ratio']:.2f}x" + (
            "" if m["how"] == "interpolated" else " (≤: reached at its smallest budget)")
        spread = "–" if m["ratio_seed_mean"] is None else (
            f"{m['ratio_seed_mean']:.2f}" + (f" ± {m['ratio_seed_std']:.2f}" if m["ratio_seed_std"] is not None
                                             else ""))
        lines.append(f"| {m['deps_budget_scale']:g} | {METRIC_NAMES[m['metric']]} | {m['deps_accuracy']:.2f} | "
                     f"{m['deps_device_hours']:.4f} | {m['baseline']} | {hours} | {ratio} | "
                     f"{spread} ({m['seeds_reached']}) |")
    lines += ["", "## DεpS minus the others at the same budget scale", "",
              "| budget | other | metric | DεpS − other | 2 × std. error | verdict |", "|---|---|---|---|---|---|"]
    for d in study["differences"]:
        lines.append(f"| {d['budget_scale']:g} | {d['other']} | {METRIC_NAMES[d['metric']]} | "
                     f"{d['deps_minus_other']:+.2f} | {2 * d['standard_error']:.2f} | {d['verdict']} |")
    resolution = sorted({r["training_resolution"] for r in study["runs"]})
    lines += ["", f"Training resolution of the runs: {', '.join(resolution)} (OFA's own ImageNet recipe trains at "
              "elastic resolution, about 1.6x cheaper per epoch than at the fixed size)."]
    return "\n".join(lines) + "\n"


def plot(study: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    for index, metric in enumerate(("smallest_top1", "mean_top1")):
        axes = figure.add_subplot(1, 2, index + 1)
        for variant in sorted({a["variant"] for a in study["aggregates"]}):
            points = sorted((a for a in study["aggregates"] if a["variant"] == variant),
                            key=lambda a: a["budget_scale"])
            axes.errorbar([p["device_hours"] for p in points], [p[metric] for p in points],
                          xerr=[p["device_hours_std"] for p in points], yerr=[p[metric + "_std"] for p in points],
                          marker="o" if variant in SCHEDULES else "s", linestyle="-" if variant in SCHEDULES else "",
                          capsize=3, label=variant)
        axes.set_xlabel("device-hours")
        axes.set_ylabel(METRIC_NAMES[metric] + " (%)")
        axes.set_title(METRIC_NAMES[metric])
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    figure.savefig(path, format="png", dpi=120)


# ---------------------------------------------------------------------------------------------------- main
def _floats(text: str) -> list:
    return [float(v) for v in text.split(",") if v]


def _ints(text: str) -> list:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> Path:
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra = args_in[args_in.index("--") + 1:] if "--" in args_in else []
    args_in = args_in[: args_in.index("--")] if "--" in args_in else args_in
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-scales", type=_floats, default=[0.002, 0.004, 0.008],
                   help="fractions of each schedule's full budget, comma-separated")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--ablations", action="store_true", help="also DεpS without ε-shrinking and FM 0.25 / 0.75")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="default bench/results/savings-<device>-<date>")
    args = p.parse_args(args_in)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    env = harness.environment(device)
    env["command"] = "python bench/bench_gpu_hours.py " + " ".join(args_in + (["--"] + extra if extra else []))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out or Path(__file__).parent / "results" / f"savings-{harness.slug(env['device'])}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    schedules = [s for s in args.schedules.split(",") if s]
    records = []
    for variant, flags, scale, seed in plan_runs(args.budget_scales, args.seeds, schedules, args.ablations):
        folder = out / f"{variant}-b{scale:g}-s{seed}"
        argv_run = [*flags, "--budget-scale", str(scale), "--seed", str(seed), "--data", args.data,
                    "--device", args.device, "--out", str(folder), *extra]
        records.append(record(variant, scale, seed, run_one(folder, argv_run)))
    aggregates = aggregate(records)
    study = {"env": env, "data": args.data, "budget_scales": args.budget_scales, "seeds": args.seeds,
             "runs": records, "aggregates": aggregates, "matched": matched_costs(records, aggregates),
             "differences": differences(aggregates)}
    (out / "study.json").write_text(json.dumps(study, indent=1))
    (out / "study.md").write_text(render(study))
    plot(study, out / "study.png")
    print((out / "study.md").read_text())
    return out


if __name__ == "__main__":
    main()
