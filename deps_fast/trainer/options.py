"""Run options: one dataclass, presets for the paper's settings, a config file, and command-line overrides.

Precedence (later wins): defaults < --preset < the preset's values for the chosen schedule < --config FILE <
explicit command-line flags. The schedule itself is taken from the flags, else the file, else the preset, so a
preset can differ per schedule (the authors' DεpS recipe is not OFA's). Every value, from a flag or a file,
goes through the one `validate`; the resolved options are saved as config.json in the run directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deps_fast import _validate
from deps_fast.schedules import PAPER_EPOCHS, Schedule, authors_sort_stage, make_schedule
from deps_fast.trainer.datasets import AUGMENTS

SCHEDULES = ("deps", "ofa", "bignas")
SPACES = ("mbv3", "mbv3-cifar", "proxyless")
AMP = ("off", "bf16", "fp16", "auto")
BACKENDS = ("auto", "cuda", "triton", "cpp", "torch")
# Training augmentation of ImageFolder data (AUGMENTS; small sets always pad, crop and, where it makes sense,
# flip): standard = RandomResizedCrop + flip; deps = the DεpS authors' (+ AutoAugment ImageNet policy,
# ColorJitter 0.4/0.4/0.4/0.1, RandomErasing 0.2); ofa = OFA's (+ "tf" colour jitter: brightness 32/255,
# saturation 0.5).


def _fixed(default):
    """An option that must not change across --resume: the checkpoint would not mean the same thing."""
    return field(default=default, metadata={"on_resume": "fixed"})


def _changeable(default):
    """An option that may change across --resume (with a warning, recorded in config.json and the report):
    the way out of a diverged run is to resume its last good checkpoint with a lower learning rate."""
    return field(default=default, metadata={"on_resume": "warn"})


@dataclass
class Options:
    """Every option of a training run (`--help` describes each). Fields made with `_fixed` must keep their
    value across --resume (`fixed_on_resume()` lists them)."""
    # what to train
    schedule: str = _fixed("deps")
    space: str = _fixed("mbv3-cifar")
    data: str = _fixed("mnist5k")
    width_mult: float = _fixed(0.35)
    kernel_sizes: Optional[tuple] = _fixed(None)  # None: (7,) for deps/bignas (the authors fix k = 7), (3, 5, 7) for ofa
    expand_ratios: tuple = _fixed((3, 4, 6))
    depths: tuple = _fixed((2, 3, 4))
    resolution: Optional[int] = _fixed(None)       # None: the data's own size (28 for mnist5k, 32 for CIFAR)
    # how long
    epochs: Optional[float] = _fixed(None)         # total epochs of the schedule ...
    budget_scale: Optional[float] = _fixed(None)   # ... or this fraction of its full budget (full_epochs)
    full_epochs: Optional[float] = _fixed(None)    # the schedule's full budget here; None: the paper's (270/605/400)
    fm_fraction: float = _fixed(0.5)
    eps_epochs: Optional[float] = _fixed(None)     # None: the authors' 5 at the full budget, scaled; 0: no ramp
    n_random: int = _fixed(2)
    warmup_epochs: float = _fixed(0.0)
    sort_stage: Optional[int] = _fixed(None)       # DεpS channel-sort stage; None: the authors' (1 for e in {3,4,6})
    # optimisation
    batch_size: int = _fixed(128)
    accum_steps: int = _fixed(1)                   # micro-batches per optimizer step (same global batch, less memory)
    lr: float = _changeable(0.1)                   # peak LR of the full model (OFA's later phases: OFA's ratios)
    lr_floor: float = _fixed(0.01)
    momentum: float = _fixed(0.9)
    weight_decay: float = _fixed(5e-5)
    label_smoothing: float = _fixed(0.1)
    dropout: float = _fixed(0.1)
    augment: str = _fixed("standard")
    elastic_resolution: Optional[tuple] = _fixed(None)  # (min, max, step): each batch at a size drawn from it
    # machine
    amp: str = _fixed("auto")                      # auto: bf16 on CUDA, off on CPU
    backend: str = "auto"
    device: str = "auto"
    seed: int = _fixed(0)
    # outputs
    out: Optional[str] = None              # None: runs/<schedule>-<space>-<data>
    resume: bool = False
    overwrite: bool = False                # replace the run already in --out (default: refuse)
    skip_bad_images: bool = False          # ImageFolder: skip unreadable images (counted in the report)
    ckpt_every: int = 0                    # also checkpoint every N steps (0: only at epoch ends)
    keep_checkpoints: int = 3
    eval_every: int = 1                    # evaluate min and max every N epochs (0: only at the end)
    calib_images: int = 2000
    calib_batch: int = 200
    eval_batch: int = 500
    max_bad_steps: int = 5                 # abort after this many skipped (non-finite / exploding) steps in a row
    spike_factor: float = 10.0             # a loss above this x the recent median is a blow-up (0: off)
    log_every: int = 10
    compare: tuple = ()
    workers: Optional[int] = None          # ImageFolder loader workers
    stop_after_steps: Optional[int] = None # checkpoint and stop after this global step (as on SIGTERM)
    preset: Optional[str] = None

    @classmethod
    def fixed_on_resume(cls) -> tuple:
        """Names of the options a resumed run must share with its checkpoint."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("on_resume") == "fixed")

    @classmethod
    def changeable_on_resume(cls) -> tuple:
        """Names of the options a resumed run may change (with a warning)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("on_resume") == "warn")

    def resolved_kernel_sizes(self) -> tuple:
        if self.kernel_sizes is not None:
            return tuple(self.kernel_sizes)
        return (3, 5, 7) if self.schedule == "ofa" else (7,)

    def resolved_full_epochs(self) -> float:
        return self.full_epochs if self.full_epochs is not None else float(PAPER_EPOCHS[self.schedule])

    def resolved_sort_stage(self) -> int:
        return self.sort_stage if self.sort_stage is not None else authors_sort_stage(self.expand_ratios)

    def resolution_policy(self) -> str:
        """How training batches are sized, in words (reports and --plan say whether elastic resolution was on)."""
        if self.elastic_resolution is None:
            return "fixed"
        lo, hi, step = self.elastic_resolution
        return f"elastic {lo}-{hi} step {step}"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def changed_since(self, saved: dict, names: Optional[tuple] = None) -> list:
        """The options among `names` (default: the fixed-on-resume ones) whose value differs from `saved` (a
        checkpoint's to_dict())."""
        now = self.to_dict()
        names = self.fixed_on_resume() if names is None else names
        return [k for k in names if json.dumps(saved.get(k)) != json.dumps(now.get(k))]


def build_schedule(o: Options, steps_per_epoch: int) -> Schedule:
    """The schedule these options describe, for a loader of `steps_per_epoch` batches."""
    space = dict(kernel_sizes=o.resolved_kernel_sizes(), depths=tuple(o.depths),
                 expand_ratios=tuple(o.expand_ratios), lr_floor=o.lr_floor)
    if o.schedule == "deps":
        extra = dict(fm_fraction=o.fm_fraction, eps_epochs=o.eps_epochs, n_random=o.n_random,
                     warmup_epochs=o.warmup_epochs, sort_stage=o.resolved_sort_stage())
    elif o.schedule == "bignas":
        extra = dict(n_random=o.n_random, warmup_epochs=o.warmup_epochs or None)
    else:
        extra = {}
    return make_schedule(o.schedule, epochs=o.epochs, budget_scale=o.budget_scale, steps_per_epoch=steps_per_epoch,
                         lr=o.lr, full_epochs=o.resolved_full_epochs(), **space, **extra)


# The paper's settings (docs/method.md §3-7). Values the paper does not state are marked as ours. A preset's
# "by_schedule" entries apply on top of its common values for that schedule only.
_OFA_ELASTIC_RESOLUTION = (128, 224, 4)  # OFA's ImageNet recipe: each batch at 128..224 in steps of 4
_CIFAR = dict(space="mbv3-cifar", width_mult=1.0, budget_scale=1.0, batch_size=256,
              lr=0.1, weight_decay=5e-4,  # ours: the usual CIFAR SGD settings at batch 256 (the paper gives none)
              label_smoothing=0.1, dropout=0.1,
              # full budgets on CIFAR: the authors' 200 DεpS epochs; OFA and BigNAS scaled by the same 200/270
              by_schedule={"deps": dict(full_epochs=200.0), "ofa": dict(full_epochs=605 * 200 / 270),
                           "bignas": dict(full_epochs=400 * 200 / 270)})
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},  # the defaults: the embedded digits on a small mbv3-cifar, minutes on two CPU cores
    "cifar10": dict(_CIFAR, data="cifar10"),
    "cifar100": dict(_CIFAR, data="cifar100"),
    # The authors' ImageNet run: peak LR 2.6 at batch 2048 (0.1625 per 128, linear scaling) for the full model,
    # no LR warmup for DεpS, E_fm = 150 of 270 (max net alone to 145, ε-ramp 145-150), their augmentation;
    # OFA: its teacher at 2.6, later phases at its own ratios (schedules.ofa), "tf" jitter, elastic resolution.
    "imagenet": dict(space="mbv3", width_mult=1.0, resolution=224, budget_scale=1.0, batch_size=2048, lr=2.6,
                     weight_decay=3e-5, label_smoothing=0.1, dropout=0.1, eval_batch=250,
                     by_schedule={"deps": dict(fm_fraction=150 / 270, warmup_epochs=0.0, augment="deps"),
                                  "ofa": dict(augment="ofa", elastic_resolution=_OFA_ELASTIC_RESOLUTION),
                                  "bignas": dict(augment="deps", warmup_epochs=5.0)}),  # ours: 5 warmup epochs
}
# The demo's budget: a few epochs of the embedded set (epochs wins over budget_scale when both are unset).
DEMO_EPOCHS = 4.0
# Training-set sizes assumed by --plan, which reads no data.
NOMINAL_TRAIN_SIZES = {"mnist5k": 4000, "cifar": 50000, "imagenet": 1281167}


def _tuple_of_ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in str(text).replace(" ", "").strip("()[]").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 3,5,7, got {text!r}")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deps_fast.train",
        description="Train a once-for-all supernet with DεpS (default), OFA progressive shrinking or BigNAS, "
                    "then recalibrate BN, evaluate subnets and write a report with device-hours. With no "
                    "arguments: DεpS on the embedded MNIST-5k digits in a few minutes on a CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--preset", choices=["demo"] + [k for k in PRESETS if k != "demo"],
      help="the paper's settings for a data set (space, epochs, batch, LR, weight decay, augmentation), per schedule")
    a("--config", metavar="FILE", help="YAML or JSON file of options (keys as the long flags, with _)")
    a("--plan", action="store_true", help="print the resolved options and the schedule (phases, steps, LRs), then "
                                          "exit without reading data or training")
    a("--plan-json", action="store_true", help="as --plan, as JSON")
    a("--schedule", choices=SCHEDULES, help="deps (default), ofa or bignas")
    a("--space", choices=SPACES, help="search space")
    a("--data", help="mnist5k (embedded, default), cifar10 / cifar100 / a CIFAR python-format directory, "
                     "or an ImageFolder root with train/ and val/")
    a("--width-mult", type=_positive(float), help="width multiplier of the supernet (demo: 0.35)")
    a("--kernel-sizes", type=_tuple_of_ints, help="elastic kernel sizes, e.g. 3,5,7 (default: 7 for deps/bignas "
                                                  "as the authors, 3,5,7 for ofa)")
    a("--expand-ratios", type=_tuple_of_ints, help="elastic expand ratios (default 3,4,6)")
    a("--depths", type=_tuple_of_ints, help="elastic depths per stage (default 2,3,4)")
    a("--resolution", type=_positive(int), help="input size (default: the data's own; 224 for ImageFolder)")
    a("--epochs", type=_positive(float), help=f"total epochs (demo default {DEMO_EPOCHS:g})")
    a("--budget-scale", type=_positive(float),
      help="epochs as a fraction of the schedule's full budget (--full-epochs; the paper's DεpS 270, OFA 605, "
           "BigNAS 400 unless a preset says otherwise)")
    a("--full-epochs", type=_positive(float), help="the schedule's full budget on this data set (scales the "
                                                   "ε-ramp, OFA's phases and BigNAS's warmup)")
    a("--fm-fraction", type=float, help="DεpS: E_fm as a share of the epochs (default 0.5; ImageNet preset 150/270)")
    a("--eps-epochs", type=float, help="DεpS: ε-ramp length (default the authors' 5 at the full budget, "
                                       "scaled by the budget; 0: no ε-shrinking, the paper's ablation)")
    a("--n-random", type=int, help="random subnets per step besides max and min (default 2)")
    a("--warmup-epochs", type=float, help="linear LR warmup at the start (default 0)")
    a("--sort-stage", type=int, help="DεpS: OFA channel-sort stage when shrinking starts (default the authors': "
                                     "1 for expand ratios {3,4,6})")
    a("--batch-size", type=_positive(int), help="global batch size (all ranks together)")
    a("--accum-steps", type=_positive(int), help="micro-batches per optimizer step")
    a("--lr", type=_positive(float), help="peak learning rate of the full model (OFA's later phases follow "
                                          "OFA's ratios 0.96/2.6, 0.08/2.6, 0.24/2.6 of it)")
    a("--lr-floor", type=float, help="cosine floor as a fraction of the peak")
    a("--momentum", type=float, help="SGD Nesterov momentum")
    a("--weight-decay", type=float, help="on conv and linear weights only")
    a("--label-smoothing", type=float, help="of the max net's (and OFA subnets') cross-entropy")
    a("--dropout", type=float, help="before the classifier, max net only in deps/bignas")
    a("--augment", choices=AUGMENTS, help="ImageFolder training augmentation: standard (RandomResizedCrop + flip), "
                                          "deps (the authors': + AutoAugment, ColorJitter, RandomErasing), ofa "
                                          "(+ 'tf' colour jitter)")
    a("--elastic-resolution", type=_tuple_of_ints, help="MIN,MAX,STEP: each training batch at a size drawn from "
                                                        "MIN..MAX (OFA's ImageNet recipe: 128,224,4)")
    a("--amp", choices=AMP, help="autocast precision: auto (bf16 on CUDA, off on CPU), bf16, fp16, off")
    a("--backend", choices=BACKENDS, help="fused-op backend")
    a("--device", help="auto, cpu, cuda or cuda:N (torchrun sets one per rank)")
    a("--seed", type=int, help="seed of data order, augmentation, init and subnet sampling")
    a("--out", help="run directory (default runs/<schedule>-<space>-<data>)")
    a("--resume", action="store_true", help="continue from the newest valid checkpoint in --out (--lr may change)")
    a("--overwrite", action="store_true", help="replace the run already in --out (default: refuse to mix runs)")
    a("--skip-bad-images", action="store_true", help="ImageFolder: skip unreadable image files, counted in "
                                                     "the report (default: stop and name the file)")
    a("--ckpt-every", type=int, help="also checkpoint every N steps (0: at epoch ends only)")
    a("--keep-checkpoints", type=_positive(int), help="checkpoints kept")
    a("--eval-every", type=int, help="evaluate min and max every N epochs (0: only at the end)")
    a("--calib-images", type=_positive(int), help="BN recalibration images per subnet")
    a("--calib-batch", type=_positive(int), help="BN recalibration batch size")
    a("--eval-batch", type=_positive(int), help="evaluation batch size")
    a("--max-bad-steps", type=_positive(int), help="abort after this many skipped steps in a row (a non-finite "
                                                   "or exploding loss or gradient skips a step's update)")
    a("--spike-factor", type=float, help="a loss above this times the median of recent steps (and above twice a "
                                         "uniform guess's) skips the update as a blow-up; 0 turns it off")
    a("--log-every", type=_positive(int), help="steps between log lines / metrics when not on a terminal")
    a("--compare", nargs="+", metavar="REPORT", help="other runs' report.json to overlay in pareto.png")
    a("--workers", type=int, help="data loader workers (ImageFolder only)")
    a("--stop-after-steps", type=_positive(int), help="checkpoint and stop after this global step (testing)")
    return p


def _load_config_file(path: str) -> dict:
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"--config {path!r} is a directory, not a YAML or JSON file")
    if not file.is_file():
        raise ValueError(f"--config {path!r}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path!r} cannot be read as UTF-8 text: {exc}") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser error becomes one clear message
        raise ValueError(f"--config {path!r} is not valid {file.suffix or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path!r} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _apply(options: Options, values: dict, origin: str) -> None:
    names = {f.name for f in dataclasses.fields(Options)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{origin}: unknown option {key!r}; allowed: {sorted(names)}")
        if isinstance(value, list):
            value = tuple(value)
        setattr(options, key, value)
    # epochs and budget_scale are two ways to say one thing: a later layer's choice replaces an earlier one's
    if values.get("epochs") is not None and values.get("budget_scale") is None:
        options.budget_scale = None
    if values.get("budget_scale") is not None and values.get("epochs") is None:
        options.epochs = None


def _optional(check):
    return lambda name, value: None if value is None else check(name, value)


def _ints(name, value, *, odd=False):
    return _validate.int_choices(name, value, odd=odd, distinct=True)


def _elastic_resolution(name, value):
    values = value if isinstance(value, tuple) else None
    if values is None or len(values) != 3:
        raise ValueError(f"{name} must be three integers MIN,MAX,STEP (e.g. 128,224,4), got {value!r}")
    lo, hi, step = (_validate.positive_int(f"{name} {part}", v) for part, v in zip(("MIN", "MAX", "STEP"), values))
    if lo > hi:
        raise ValueError(f"{name} must have MIN <= MAX, got {value!r}")
    return value


def _strings(name, value):
    if not isinstance(value, tuple):
        raise _validate.WrongType(f"{name} must be a list of paths, got {value!r}")
    return tuple(_string(f"{name}[{i}]", v) for i, v in enumerate(value))


def _string(name, value):
    if not isinstance(value, str) or not value:
        raise _validate.WrongType(f"{name} must be a non-empty string, got {value!r}")
    return value


# One check per option: flags (after argparse's syntax) and --config values alike go through these.
_CHECKS = {
    "schedule": lambda n, v: _validate.one_of(n, v, SCHEDULES),
    "space": lambda n, v: _validate.one_of(n, v, SPACES),
    "data": _string,
    "width_mult": _validate.positive,
    "kernel_sizes": _optional(lambda n, v: _ints(n, v, odd=True)),
    "expand_ratios": _ints,
    "depths": _ints,
    "resolution": _optional(_validate.positive_int),
    "epochs": _optional(_validate.positive),
    "budget_scale": _optional(_validate.positive),
    "full_epochs": _optional(_validate.positive),
    "fm_fraction": lambda n, v: _validate.real(n, v, "strictly between 0 and 1", lambda x: 0 < x < 1),
    "eps_epochs": _optional(_validate.non_negative),
    "n_random": lambda n, v: _validate.integer(n, v, minimum=0),
    "warmup_epochs": _validate.non_negative,
    "sort_stage": _optional(lambda n, v: _validate.integer(n, v, minimum=0)),
    "batch_size": _validate.positive_int,
    "accum_steps": _validate.positive_int,
    "lr": _validate.positive,
    "lr_floor": _validate.fraction,
    "momentum": _validate.fraction,
    "weight_decay": _validate.non_negative,
    "label_smoothing": _validate.fraction,
    "dropout": _validate.fraction,
    "augment": lambda n, v: _validate.one_of(n, v, AUGMENTS),
    "elastic_resolution": _optional(_elastic_resolution),
    "amp": lambda n, v: _validate.one_of(n, v, AMP),
    "backend": lambda n, v: _validate.one_of(n, v, BACKENDS),
    "device": _string,
    "seed": lambda n, v: _validate.integer(n, v, minimum=0, maximum=2 ** 63 - 1),
    "out": _optional(_string),
    "resume": _validate.boolean,
    "overwrite": _validate.boolean,
    "skip_bad_images": _validate.boolean,
    "ckpt_every": lambda n, v: _validate.integer(n, v, minimum=0),
    "keep_checkpoints": _validate.positive_int,
    "eval_every": lambda n, v: _validate.integer(n, v, minimum=0),
    "calib_images": _validate.positive_int,
    "calib_batch": _validate.positive_int,
    "eval_batch": _validate.positive_int,
    "max_bad_steps": _validate.positive_int,
    "spike_factor": _validate.non_negative,
    "log_every": _validate.positive_int,
    "compare": lambda n, v: _strings(n, v),
    "workers": _optional(lambda n, v: _validate.integer(n, v, minimum=0)),
    "stop_after_steps": _optional(_validate.positive_int),
    "preset": _optional(lambda n, v: _validate.one_of(n, v, tuple(PRESETS))),
}


def validate(o: Options) -> Options:
    """Check every option (name, value and what is allowed in the message) and the rules between them."""
    missing = {f.name for f in dataclasses.fields(Options)} - set(_CHECKS)
    assert not missing, f"options without a check: {missing}"
    for name, check in _CHECKS.items():
        check(name, getattr(o, name))
    if o.batch_size % o.accum_steps:
        raise ValueError(f"batch_size={o.batch_size} must be a multiple of accum_steps={o.accum_steps}")
    if o.sort_stage is not None and o.sort_stage > len(o.expand_ratios) - 1:
        raise ValueError(f"sort_stage={o.sort_stage} must be at most {len(o.expand_ratios) - 1} (one less than the "
                         f"number of expand ratios {tuple(o.expand_ratios)})")
    if o.resume and o.overwrite:
        raise ValueError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    if o.epochs is not None and o.budget_scale is not None:
        raise ValueError(f"give --epochs or --budget-scale, not both (got epochs={o.epochs}, "
                         f"budget_scale={o.budget_scale})")
    return o


def parse_command_line(argv: Optional[list] = None) -> tuple[Options, Optional[str]]:
    """(options, mode) from the command line; mode is None (train), "plan" or "plan-json"."""
    args = vars(build_parser().parse_args(argv))
    mode = "plan-json" if args.pop("plan_json", False) else ("plan" if args.pop("plan", False) else None)
    file_values = _load_config_file(args.pop("config")) if "config" in args else {}
    preset = args.get("preset") or file_values.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    preset_values = dict(PRESETS.get(preset, {}))
    by_schedule = preset_values.pop("by_schedule", {})
    schedule = args.get("schedule") or file_values.get("schedule") or preset_values.get("schedule") or \
        Options.schedule
    options = Options()
    if preset:
        _apply(options, {**preset_values, "preset": preset}, f"--preset {preset}")
        _apply(options, by_schedule.get(schedule, {}), f"--preset {preset} ({schedule})")
    _apply(options, file_values, "--config")
    _apply(options, args, "command line")
    if options.epochs is None and options.budget_scale is None:
        options.epochs = DEMO_EPOCHS
    if preset == "imagenet" and options.data == Options.data:
        raise ValueError("--preset imagenet needs --data: an ImageFolder root with train/ and val/")
    return validate(options), mode


def parse_options(argv: Optional[list] = None) -> Options:
    """Options from the command line (argv) following the precedence in the module docstring."""
    return parse_command_line(argv)[0]
