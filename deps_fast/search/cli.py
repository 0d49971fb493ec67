"""`python -m deps_fast.search`: from a trained supernet to the best subnet for each budget; see --help.

Exit status 0 on success; 2 with one line on a user's mistake (an unknown run, no checkpoint, a bad number,
an infeasible budget, a missing optional package). Any other error keeps its traceback: it is a bug.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from typing import Optional

import torch

from deps_fast.search.pipeline import SearchRun, SearchSettings


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block) and exits 2."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


def number(kind, allowed: str, ok):
    """An argparse type: `kind(text)`, finite, with ok(value); else the one-line error says what is allowed."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value
    return parse


def positive(kind):
    return number(kind, f"a positive {kind.__name__}", lambda v: v > 0)


non_negative_int = number(int, "an integer >= 0", lambda v: v >= 0)
fraction = number(float, "a number in (0, 1)", lambda v: 0 < v < 1)


def int_list(text):
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers such as 24,28, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m deps_fast.search",
        description="Specialise a trained once-for-all supernet: evaluate N subnets on a search split carved from "
                    "the training images, fit OFA's accuracy predictor, build a latency table on this device, "
                    "run NSGA-II per budget, then measure the chosen subnets (test top-1, whole-network latency) "
                    "and export them. Writes RUN/search/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    source = p.add_argument_group("the supernet")
    source.add_argument("--run", help="a training output directory (config.json + checkpoints/)")
    source.add_argument("--ofa-checkpoint", metavar="FILE", help="weights saved by once-for-all instead of --run")
    source.add_argument("--space", choices=("mbv3", "mbv3-cifar", "proxyless"), help="with --ofa-checkpoint")
    source.add_argument("--width-mult", type=positive(float), default=1.0, help="with --ofa-checkpoint")
    source.add_argument("--data", help="with --ofa-checkpoint: the data set (as python -m deps_fast.train --data)")
    source.add_argument("--out", help="with --ofa-checkpoint: where search/ goes (default runs/ofa-<file>)")
    budgets = p.add_argument_group("budgets (any combination; each one gets its own chosen subnet)")
    budgets.add_argument("--max-mflops", type=positive(float), help="multiply-accumulates, millions")
    budgets.add_argument("--max-params-m", type=positive(float), help="parameters, millions")
    budgets.add_argument("--max-latency-ms", type=positive(float),
                         help="latency on --device at --latency-batch, from the lookup table")
    a("--resolutions", type=int_list, help="input sizes to search over (default: the training resolution)")
    a("--n-subnets", type=positive(int), help="subnets evaluated to train the predictor (default 200 on CPU, "
                                             "1000 on GPU)")
    a("--population", type=positive(int), default=100, help="NSGA-II population")
    a("--generations", type=positive(int), default=100, help="NSGA-II generations")
    a("--search-images", type=positive(int), help="training images held out as the search split (default a "
                                                  "quarter of them, at most 10,000)")
    a("--calib-images", type=positive(int), default=2000, help="BN recalibration images per subnet (from the "
                                                               "training images outside the search split)")
    a("--calib-batch", type=positive(int), default=200, help="BN recalibration batch size")
    a("--eval-batch", type=positive(int), default=500, help="evaluation batch size")
    a("--holdout", type=fraction, default=0.2, help="share of evaluated subnets held out to test the predictor")
    a("--predictor-epochs", type=positive(int), default=300, help="predictor training epochs")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N: evaluation and latency")
    a("--latency-batch", type=positive(int), default=1, help="batch size of the latency measurements")
    a("--latency-runtime", choices=("torch", "onnxruntime"), default="torch",
      help="time eager torch or ONNX Runtime (CPU; needs onnxruntime, onnx, onnxscript)")
    a("--latency-repeats", type=positive(int), default=50, help="timed calls per part (median)")
    a("--latency-warmup", type=non_negative_int, default=10, help="untimed calls before timing")
    a("--latency-check", type=non_negative_int, default=10,
      help="random subnets timed as whole networks to check the table")
    a("--no-export", action="store_true", help="skip the exports")
    a("--no-onnx", action="store_true", help="export state dict and torch.export program only")
    a("--seed", type=int, default=0, help="seed of the split, calibration images, subnet sample and search")
    a("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text!r}: no CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text!r}: expected auto, cpu, cuda or cuda:N")
    return device


def _require(modules: list, why: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{why} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def settings_from(args) -> SearchSettings:
    budgets = {m: v for m, v in (("mflops", args.max_mflops), ("params_m", args.max_params_m),
                                 ("latency_ms", args.max_latency_ms)) if v is not None}
    return SearchSettings(budgets=budgets, resolutions=args.resolutions, n_subnets=args.n_subnets,
                          population=args.population, generations=args.generations, search_images=args.search_images,
                          calib_images=args.calib_images, calib_batch=args.calib_batch, eval_batch=args.eval_batch,
                          holdout=args.holdout, predictor_epochs=args.predictor_epochs,
                          latency_batch=args.latency_batch, latency_runtime=args.latency_runtime,
                          latency_warmup=args.latency_warmup, latency_repeats=args.latency_repeats,
                          latency_check=args.latency_check, export=not args.no_export, onnx=not args.no_onnx,
                          seed=args.seed, progress=not args.no_progress)


def load_source(args, device):
    from deps_fast.search import source

    if (args.run is None) == (args.ofa_checkpoint is None):
        raise ValueError("give --run RUN_DIR (a training output) or --ofa-checkpoint FILE --space SPACE --data DATA")
    if args.run is not None:
        extra = [f for f, v in (("--space", args.space), ("--data", args.data), ("--out", args.out)) if v]
        if extra:
            raise ValueError(f"{', '.join(extra)} go with --ofa-checkpoint; a --run brings its own")
        return source.from_run(args.run, device)
    if args.space is None:
        raise ValueError("--ofa-checkpoint needs --space (mbv3, mbv3-cifar or proxyless)")
    resolution = max(args.resolutions) if args.resolutions else None
    return source.from_ofa(args.ofa_checkpoint, args.space, args.data, args.out, device, args.width_mult, resolution)


def main(argv: Optional[list] = None) -> int:
    from deps_fast.search.nsga import InfeasibleBudget

    args = build_parser().parse_args(argv)
    command = "python -m deps_fast.search " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from(args)
        _require(["pymoo"], "the search")
        if settings.export and settings.onnx:
            _require(["onnx", "onnxscript"], "ONNX export (or pass --no-onnx)")
        if settings.latency_runtime == "onnxruntime":
            _require(["onnxruntime", "onnx", "onnxscript"], "--latency-runtime onnxruntime")
        device = resolve_device(args.device)
        run = SearchRun(load_source(args, device), settings, device, command)
        run.prepare()  # budgets against the space's smallest values, the data, the split size
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run.run()
    except InfeasibleBudget as exc:  # budgets each feasible alone but not together
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in result["comparisons"]:
        print(f"{c['target']}: {c['chosen']}  test top-1 {c['chosen_test_top1']:.2f}%  "
              f"{c['chosen_mflops']:.2f} MFLOPs  {c['chosen_measured_latency_ms']:.3f} ms measured"
              + (f"  | best uniform within budget {c['best_uniform']}: {c['best_uniform_test_top1']:.2f}%"
                 if c["best_uniform"] else "  | no uniform subnet fits"))
    print(f"results: {run.out / 'search.md'}")
    return 0
