"""The specialization step as a benchmark: wall time per stage, predictor RMSE and Kendall tau, and the latency
table's error against whole-network timings, for one run, written as JSON under bench/results/.

    python bench/bench_search.py --run runs/deps-mbv3-cifar-mnist5k [search options, as python -m deps_fast.search]

By default the search writes into a temporary folder (nothing reused: the times are those of a first search);
`--reuse` searches inside the run instead, reusing its caches. `--summarize RUN/search/search.json` records a
search already made (its own command, device and times) without running anything.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, slug  # noqa: E402


def main() -> None:
    from deps_fast.search.cli import build_parser, load_source, resolve_device, settings_from
    from deps_fast.search.pipeline import SearchRun

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--reuse", action="store_true")
    extra.add_argument("--summarize", metavar="SEARCH_JSON")
    extra.add_argument("--finetune", nargs="*", default=[], metavar="FINETUNE_JSON",
                       help="finetune.json files whose before/after top-1 to record too")
    extra.add_argument("--results", default=str(Path(__file__).parent / "results"))
    mine, rest = extra.parse_known_args()
    if mine.summarize:
        result = json.loads(Path(mine.summarize).read_text())
        device, run_name = torch.device("cpu" if result["device"].startswith("cpu") else "cuda"), result["run_dir"]
    else:
        args = build_parser().parse_args(rest)
        device = resolve_device(args.device)
        source = load_source(args, device)
        scratch = None
        if not mine.reuse:
            scratch = tempfile.TemporaryDirectory(prefix="bench-search-")
            source.run_dir = Path(scratch.name)
        command = "python bench/bench_search.py " + " ".join(sys.argv[1:])
        result = SearchRun(source, settings_from(args), device, command).run()
        run_name = str(args.run or args.ofa_checkpoint)
        if scratch is not None:
            scratch.cleanup()
    env = environment(device)
    if mine.summarize:  # the numbers are the search's: its device, command and date
        made = result.get("date") or datetime.fromtimestamp(Path(mine.summarize).stat().st_mtime,
                                                            timezone.utc).isoformat(timespec="seconds")
        env.update(device=result["device"], search_command=result["command"], date=made)
    lat = result["latency_table"]
    summary = {
        "env": env,
        "run": run_name,
        "settings": result["settings"],
        "times_s": result["times_s"],
        "evaluated_subnets": result["evaluated"]["subnets"],
        "seconds_per_evaluated_subnet": result["times_s"]["evaluate_subnets"] / max(1, result["evaluated"]["subnets"]),
        "predictor": result["predictor"],
        "latency_table": {"parts": lat["parts"], "runtime": lat["runtime"], "batch": lat["batch"], **lat["fit"],
                          "chosen_and_uniform_mean_abs_relative_error":
                              lat["chosen_and_uniform"]["mean_abs_relative_error"],
                          "chosen_and_uniform_mean_relative_error": lat["chosen_and_uniform"]["mean_relative_error"]},
        "latency_check": lat["check_subnets"] + lat["chosen_and_uniform"]["subnets"],
        "subnets": result["subnets"],
        "comparisons": result["comparisons"],
        "finetune": [{k: v for k, v in json.loads(Path(f).read_text()).items() if k != "export"}
                     for f in mine.finetune],
    }
    out = Path(mine.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"search-{slug(env['device'])}-{env['date'][:10]}.json"
    path.write_text(json.dumps(summary, indent=1))
    p = result["predictor"]
    fit = lat["fit"]
    print(f"search {result['times_s']['total']:.1f} s ({json.dumps(result['times_s'])}); predictor RMSE "
          f"{p['rmse_top1_points']:.3f} points, tau {p['kendall_tau']:.3f}; latency table vs whole networks: raw "
          f"mean |error| {100 * fit.get('raw_mean_abs_relative_error', float('nan')):.1f}%, scaled by "
          f"{fit['scale']:.3f}: {100 * (lat['chosen_and_uniform']['mean_abs_relative_error'] or float('nan')):.1f}% "
          f"on the chosen and uniform subnets")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
