"""Run options: one dataclass, presets for the paper's settings, a config file, and command-line overrides.

Precedence (later wins): defaults < --preset < --config FILE < explicit command-line flags. The resolved
options are saved as config.json in the run directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deps_fast.schedules import Schedule, make_schedule

SCHEDULES = ("deps", "ofa", "bignas")
SPACES = ("mbv3", "mbv3-cifar", "proxyless")
AMP = ("off", "bf16", "fp16", "auto")


def _fixed(default):
    """An option that must not change across --resume: the checkpoint would not mean the same thing."""
    return field(default=default, metadata={"fixed_on_resume": True})


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
    budget_scale: Optional[float] = _fixed(None)   # ... or this fraction of the paper's budget (DεpS 270, OFA 605, BigNAS 400)
    fm_fraction: float = _fixed(0.5)
    eps_epochs: Optional[float] = _fixed(None)     # None: 5 epochs at 270, proportional otherwise
    n_random: int = _fixed(2)
    warmup_epochs: float = _fixed(0.0)
    # optimisation
    batch_size: int = _fixed(128)
    accum_steps: int = _fixed(1)                   # micro-batches per optimizer step (same global batch, less memory)
    lr: float = _fixed(0.1)
    lr_floor: float = _fixed(0.01)
    momentum: float = _fixed(0.9)
    weight_decay: float = _fixed(5e-5)
    label_smoothing: float = _fixed(0.1)
    dropout: float = _fixed(0.1)
    # machine
    amp: str = _fixed("auto")                      # auto: bf16 on CUDA, off on CPU
    backend: str = "auto"
    device: str = "auto"
    seed: int = _fixed(0)
    # outputs
    out: Optional[str] = None              # None: runs/<schedule>-<space>-<data>
    resume: bool = False
    ckpt_every: int = 0                    # also checkpoint every N steps (0: only at epoch ends)
    keep_checkpoints: int = 3
    eval_every: int = 1                    # evaluate min and max every N epochs (0: only at the end)
    calib_images: int = 2000
    calib_batch: int = 200
    eval_batch: int = 500
    max_bad_steps: int = 5                 # abort after this many non-finite losses in a row
    log_every: int = 10
    compare: tuple = ()
    workers: Optional[int] = None          # ImageFolder loader workers
    stop_after_steps: Optional[int] = None # checkpoint and stop after this global step (as on SIGTERM)
    preset: Optional[str] = None

    @classmethod
    def fixed_on_resume(cls) -> tuple:
        """Names of the options a resumed run must share with its checkpoint."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("fixed_on_resume"))

    def resolved_kernel_sizes(self) -> tuple:
        if self.kernel_sizes is not None:
            return tuple(self.kernel_sizes)
        return (3, 5, 7) if self.schedule == "ofa" else (7,)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def changed_since(self, saved: dict) -> list:
        """The fixed-on-resume options whose value differs from `saved` (a checkpoint's to_dict())."""
        now = self.to_dict()
        return [k for k in self.fixed_on_resume() if json.dumps(saved.get(k)) != json.dumps(now[k])]


def build_schedule(o: Options, steps_per_epoch: int) -> Schedule:
    """The schedule these options describe, for a loader of `steps_per_epoch` batches."""
    space = dict(kernel_sizes=o.resolved_kernel_sizes(), depths=tuple(o.depths),
                 expand_ratios=tuple(o.expand_ratios), lr_floor=o.lr_floor)
    if o.schedule == "deps":
        extra = dict(fm_fraction=o.fm_fraction, eps_epochs=o.eps_epochs, n_random=o.n_random,
                     warmup_epochs=o.warmup_epochs)
    elif o.schedule == "bignas":
        extra = dict(n_random=o.n_random, warmup_epochs=o.warmup_epochs or None)
    else:
        extra = {}
    return make_schedule(o.schedule, epochs=o.epochs, budget_scale=o.budget_scale, steps_per_epoch=steps_per_epoch,
                         lr=o.lr, **space, **extra)


# The paper's settings (docs/method.md §3-7). Values the paper does not state are marked as ours.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},  # the defaults: the embedded digits on a small mbv3-cifar, minutes on two CPU cores
    "cifar10": dict(space="mbv3-cifar", data="cifar10", width_mult=1.0, budget_scale=200 / 270, batch_size=256,
                    lr=0.1, weight_decay=5e-4,  # ours: the usual CIFAR SGD settings at batch 256
                    label_smoothing=0.1, dropout=0.1),
    "cifar100": dict(space="mbv3-cifar", data="cifar100", width_mult=1.0, budget_scale=200 / 270, batch_size=256,
                     lr=0.1, weight_decay=5e-4, label_smoothing=0.1, dropout=0.1),
    "imagenet": dict(space="mbv3", width_mult=1.0, resolution=224, budget_scale=1.0, batch_size=2048, lr=0.96,
                     weight_decay=3e-5, label_smoothing=0.1, dropout=0.1, warmup_epochs=5.0, eval_batch=250),
}
# The demo's budget: a few epochs of the embedded set (epochs wins over budget_scale when both are unset).
DEMO_EPOCHS = 4.0


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
        if value <= 0:
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
      help="the paper's settings for a data set (space, epochs, batch, LR, weight decay, augmentation)")
    a("--config", metavar="FILE", help="YAML or JSON file of options (keys as the long flags, with _)")
    a("--schedule", choices=SCHEDULES, help="deps (default), ofa or bignas")
    a("--space", choices=SPACES, help="search space")
    a("--data", help="mnist5k (embedded, default), cifar10 / cifar100 / a CIFAR python-format directory, "
                     "or an ImageFolder root with train/ and val/")
    a("--width-mult", type=_positive(float), help="width multiplier of the supernet (demo: 0.35)")
    a("--kernel-sizes", type=_tuple_of_ints, help="elastic kernel sizes, e.g. 3,5,7 (default: 7 for deps/bignas "
                                                  "as the authors, 3,5,7 for ofa)")
    a("--expand-ratios", type=_tuple_of_ints, help="elastic expand ratios (default 3,4,6)")
    a("--depths", type=_tuple_of_ints, help="elastic depths per stage (default 2,3,4)")
    a("--resolution", type=_positive(int), help="input size (default: the data's own)")
    a("--epochs", type=_positive(float), help=f"total epochs (demo default {DEMO_EPOCHS:g})")
    a("--budget-scale", type=_positive(float),
      help="epochs as a fraction of the paper's budget: DεpS 270, OFA 605, BigNAS 400 (same factor for all)")
    a("--fm-fraction", type=float, help="DεpS: share of epochs of full-model warmup (default 0.5)")
    a("--eps-epochs", type=_positive(float), help="DεpS: ε-ramp length (default 5 epochs at 270, proportional)")
    a("--n-random", type=int, help="random subnets per step besides max and min (default 2)")
    a("--warmup-epochs", type=float, help="linear LR warmup at the start (default 0)")
    a("--batch-size", type=_positive(int), help="global batch size (all ranks together)")
    a("--accum-steps", type=_positive(int), help="micro-batches per optimizer step")
    a("--lr", type=_positive(float), help="peak learning rate")
    a("--lr-floor", type=float, help="cosine floor as a fraction of the peak")
    a("--momentum", type=float, help="SGD Nesterov momentum")
    a("--weight-decay", type=float, help="on conv and linear weights only")
    a("--label-smoothing", type=float, help="of the max net's (and OFA subnets') cross-entropy")
    a("--dropout", type=float, help="before the classifier, max net only in deps/bignas")
    a("--amp", choices=AMP, help="autocast precision: auto (bf16 on CUDA, off on CPU), bf16, fp16, off")
    a("--backend", choices=("auto", "cuda", "triton", "cpp", "torch"), help="fused-op backend")
    a("--device", help="auto, cpu, cuda or cuda:N (torchrun sets one per rank)")
    a("--seed", type=int, help="seed of data order, augmentation, init and subnet sampling")
    a("--out", help="run directory (default runs/<schedule>-<space>-<data>)")
    a("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    a("--ckpt-every", type=int, help="also checkpoint every N steps (0: at epoch ends only)")
    a("--keep-checkpoints", type=_positive(int), help="checkpoints kept")
    a("--eval-every", type=int, help="evaluate min and max every N epochs (0: only at the end)")
    a("--calib-images", type=_positive(int), help="BN recalibration images per subnet")
    a("--calib-batch", type=_positive(int), help="BN recalibration batch size")
    a("--eval-batch", type=_positive(int), help="evaluation batch size")
    a("--max-bad-steps", type=_positive(int), help="abort after this many non-finite losses in a row")
    a("--log-every", type=_positive(int), help="steps between log lines / metrics when not on a terminal")
    a("--compare", nargs="+", metavar="REPORT", help="other runs' report.json to overlay in pareto.png")
    a("--workers", type=int, help="data loader workers (ImageFolder only)")
    a("--stop-after-steps", type=_positive(int), help="checkpoint and stop after this global step (testing)")
    return p


def _load_config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {path!r}: no such file")
    text = file.read_text()
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


def validate(o: Options) -> Options:
    def need(ok, name, allowed):
        if not ok:
            raise ValueError(f"{name}={getattr(o, name)!r} is not allowed: {allowed}")
    need(o.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
    need(o.space in SPACES, "space", f"one of {SPACES}")
    need(o.amp in AMP, "amp", f"one of {AMP}")
    need(0 < o.fm_fraction < 1, "fm_fraction", "strictly between 0 and 1")
    need(o.n_random >= 0, "n_random", ">= 0")
    need(o.batch_size % o.accum_steps == 0, "batch_size", f"a multiple of accum_steps={o.accum_steps}")
    need(0 <= o.label_smoothing < 1, "label_smoothing", "in [0, 1)")
    need(0 <= o.dropout < 1, "dropout", "in [0, 1)")
    need(o.weight_decay >= 0, "weight_decay", ">= 0")
    need(0 <= o.momentum < 1, "momentum", "in [0, 1)")
    need(0 <= o.lr_floor < 1, "lr_floor", "in [0, 1)")
    need(o.ckpt_every >= 0 and o.eval_every >= 0, "ckpt_every", "ckpt_every and eval_every >= 0")
    if o.epochs is not None and o.budget_scale is not None:
        raise ValueError(f"give --epochs or --budget-scale, not both (got epochs={o.epochs}, "
                         f"budget_scale={o.budget_scale})")
    return o


def parse_options(argv: Optional[list] = None) -> Options:
    """Options from the command line (argv) following the precedence in the module docstring."""
    args = vars(build_parser().parse_args(argv))
    options = Options()
    preset = args.get("preset")
    if preset:
        _apply(options, PRESETS[preset], f"--preset {preset}")
    if "config" in args:
        file_values = _load_config_file(args.pop("config"))
        _apply(options, file_values, "--config")
    _apply(options, args, "command line")
    if options.epochs is None and options.budget_scale is None:
        options.epochs = DEMO_EPOCHS
    if preset == "imagenet" and options.data == Options.data:
        raise ValueError("--preset imagenet needs --data: an ImageFolder root with train/ and val/")
    return validate(options)
