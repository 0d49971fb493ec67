"""Training schedules as data: what runs at each optimizer step, at which learning rate, with which β_t.

A `Schedule` is a tuple of `Phase`s plus `steps_per_epoch`. The trainer asks `Schedule.plan(t)` at every global
optimizer step t = 0, 1, 2, ... and gets the phase, the LR and DεpS's subnet gradient scale β_t. Three factories
build the schedules of docs/method.md §3-5 (`deps`, `ofa`, `bignas`); `make_schedule` picks one by name and budget.

Step arithmetic (all of it lives here, so the trainer never converts epochs itself):

* Phase k ends at step round(cumulative_epochs_k · steps_per_epoch), rounded half up (not Python's banker's
  rounding, so 2.5 steps is always 3), and every phase with epochs > 0 gets at least one step. The "at least
  one step" rule can push later boundaries out, so for tiny runs total_steps() may exceed
  round(total_epochs() · steps_per_epoch).
* Phases sharing an `lr_group` share ONE curve over the steps [s0, s1) of the group. With W warmup steps
  (round(warmup_epochs · steps_per_epoch), at most s1 - s0) and C = s1 - s0 - W cosine steps:
      η(t) = lr · (t - s0 + 1) / W                                    for t - s0 < W   (linear, per step)
      η(t) = lr · (f + (1 - f) · (1 + cos(π · i / (C - 1))) / 2)      otherwise, i = t - s0 - W
  where f = lr_floor; so the cosine starts at the peak lr and reaches f · lr exactly on the group's last step
  (a one-step cosine part just runs at lr).
* DεpS's β_t (docs/method.md §3) uses the integer steps [a, b) of the ramp phase, so the ramp is exactly those steps:
      β_t = 0 for t < a;   β_t = (t - a + 1) / (b - a) · η(b) / η(t) for a <= t < b;   β_t = 1 for t >= b.
  η is the live `lr_at`, and b is the step at E_fm (the first step of full shrinking), so the subnets'
  effective LR β_t · η(t) climbs linearly to η(E_fm). Schedules without a ramp have β_t = 1 throughout.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, fields

import torch

from deps_fast import _validate
from deps_fast._util import seeded_generator

PAPER_EPOCHS = {"deps": 270, "ofa": 605, "bignas": 400}

# Cosine floor as a fraction of each curve's peak. docs/method.md §3 asks for "a small floor"; 1% keeps the last
# steps useful (a floor of 0 would make the final step a no-op under our curve, which ends exactly at the
# floor). Used for all three schedules so they are compared under the same curve shape; OFA's own code
# decays to ~0, which only changes the last few steps of each phase.
LR_FLOOR = 0.01

TEACHERS = ("none", "inplace", "frozen")

# DεpS: 5 ramp epochs at the full budget of any data set (the authors' 270-epoch ImageNet run; 5 again in
# their CIFAR code). BigNAS: 5 warmup epochs in 400 (our choice,
# following AttentiveNAS/AlphaNet configs; the BigNAS paper gives no number for our setting).
_DEPS_PAPER_EPS_EPOCHS = 5.0
_BIGNAS_PAPER_WARMUP_EPOCHS = 5.0

# OFA progressive shrinking at the paper's budget: (name, epochs, warmup epochs, subnets per step, LR relative
# to the full model's). OFA's LRs at batch 2048 are 2.6 (the full model, "teacher"), 0.96 (kernel), 0.08 and
# 0.24; as ratios of 2.6, one `lr` (the full model's peak, as for DεpS and BigNAS) gives OFA's whole recipe at
# any batch size.
_OFA_TEACHER_LR = 2.6
_OFA_PAPER_PHASES = (
    ("teacher", 180.0, 0.0, 0, 1.0),
    ("kernel", 125.0, 5.0, 1, 0.96 / _OFA_TEACHER_LR),
    ("depth_34", 25.0, 0.0, 2, 0.08 / _OFA_TEACHER_LR),
    ("depth_234", 125.0, 5.0, 2, 0.24 / _OFA_TEACHER_LR),
    ("expand_46", 25.0, 0.0, 4, 0.08 / _OFA_TEACHER_LR),
    ("expand_346", 125.0, 5.0, 4, 0.24 / _OFA_TEACHER_LR),
)


# ----------------------------------------------------------------------------------------------- validation
def _choices(name: str, value) -> tuple[int, ...] | None:
    """None (all of the supernet's choices) or a sorted tuple of distinct positive ints."""
    return None if value is None else _validate.int_choices(name, value, distinct=True)


def _epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    # round(…, 6) first: 0.1 + 0.2 epochs must not land a hair below a .5 boundary and round the other way
    return math.floor(round(epochs * steps_per_epoch, 6) + 0.5)


# -------------------------------------------------------------------------------------------------- Phase
@dataclass(frozen=True)
class Phase:
    """One stretch of training with fixed sampling rules. See the module docstring for the LR curve.

    name: e.g. "fm_warmup", "eps_ramp", "shrink", "teacher", "kernel", "depth_34", "sandwich"; unique per schedule.
    epochs: length (may be fractional); lr: peak of the phase's LR curve; lr_group: phases with the same group
    share one warmup+cosine curve, so they must be contiguous and agree on lr and warmup_epochs.
    warmup_epochs: linear per-step warmup at the start of the group's curve (0 = none).
    train_max: the max net runs every step with label-smoothed CE (and dropout).
    n_random / include_min: uniformly random subnets per step / also the min subnet (sandwich rule).
    teacher: "none" | "inplace" (the max net's detached logits of the same step) | "frozen" (snapshot of the
    trained full model, OFA). subnet_label_loss: subnets also get label-smoothed CE (OFA: CE + KD).
    beta_ramp: subnet gradients scaled by β_t (DεpS ε-ramp). sort_channels: run OFA's channel reorganization
    once on the first step of this phase, at OFA's stage `sort_stage` (models.reorganize). kernel_sizes / depths / expand_ratios: the sampled space, None = all
    of the supernet's choices; stored sorted.
    """

    name: str
    epochs: float
    lr: float
    lr_group: int
    warmup_epochs: float = 0.0
    train_max: bool = False
    n_random: int = 0
    include_min: bool = False
    teacher: str = "none"
    subnet_label_loss: bool = False
    beta_ramp: bool = False
    sort_channels: bool = False
    sort_stage: int = 0
    kernel_sizes: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    expand_ratios: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        normalized = {
            "epochs": _validate.non_negative("epochs", self.epochs),
            "lr": _validate.positive("lr", self.lr),
            "lr_group": _validate.integer("lr_group", self.lr_group, minimum=0),
            "warmup_epochs": _validate.non_negative("warmup_epochs", self.warmup_epochs),
            "n_random": _validate.integer("n_random", self.n_random, minimum=0),
            "sort_stage": _validate.integer("sort_stage", self.sort_stage, minimum=0),
        }
        for flag in ("train_max", "include_min", "subnet_label_loss", "beta_ramp", "sort_channels"):
            _validate.boolean(flag, getattr(self, flag))
        for space in ("kernel_sizes", "depths", "expand_ratios"):
            normalized[space] = _choices(space, getattr(self, space))
        # frozen dataclass: normalization (int -> float, list -> sorted tuple) has to bypass __setattr__
        for key, value in normalized.items():
            object.__setattr__(self, key, value)
        self._check_consistency()

    def _check_consistency(self):
        """Reject phases the trainer could not run sensibly, naming the offending field."""
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")
        if not self.train_max and not self.samples_subnets:
            raise ValueError(f"phase {self.name!r} trains nothing: train_max=False, n_random=0, include_min=False")
        if self.teacher == "inplace" and not self.train_max:
            raise ValueError(f"teacher='inplace' needs train_max=True (the max net's logits are the teacher) "
                             f"in phase {self.name!r}")
        if not self.samples_subnets:
            for flag, value in (("teacher", self.teacher != "none"), ("beta_ramp", self.beta_ramp),
                                ("subnet_label_loss", self.subnet_label_loss)):
                if value:
                    raise ValueError(f"{flag}={getattr(self, flag)!r} needs subnets, but phase {self.name!r} "
                                     f"samples none (n_random=0, include_min=False)")
        elif self.teacher == "none" and not self.subnet_label_loss:
            raise ValueError(f"phase {self.name!r} samples subnets but gives them no loss: "
                             f"teacher='none' and subnet_label_loss=False")

    @property
    def samples_subnets(self) -> bool:
        return self.n_random > 0 or self.include_min

    @property
    def subnets_per_step(self) -> int:
        """Subnets besides the max net run each step (random ones plus the min one)."""
        return self.n_random + int(self.include_min)

    def to_dict(self) -> dict:
        """JSON-ready: tuples become lists, so json.loads(json.dumps(d)) == d."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for space in ("kernel_sizes", "depths", "expand_ratios"):
            if data[space] is not None:
                data[space] = list(data[space])
        return data


# --------------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class StepPlan:
    """Everything the trainer needs at one global optimizer step."""

    step: int
    epoch: int  # step // steps_per_epoch
    phase: Phase
    phase_index: int
    lr: float
    beta: float
    phase_start: bool  # first step of the phase: run sort_channels / snapshot the teacher now


@dataclass(frozen=True)
class Schedule:
    """Phases plus the step arithmetic of the module docstring.

    name: "deps" | "ofa" | "bignas" from the factories (any non-empty string for hand-built schedules).
    lr_floor: cosine floor as a fraction of each curve's peak, in [0, 1).
    eps_start_epoch / eps_end_epoch: the ε-ramp window in epochs, given exactly when some phase has
    beta_ramp; they must equal the cumulative epochs at which the (contiguous) beta_ramp phases start and end.
    """

    name: str
    phases: tuple[Phase, ...]
    steps_per_epoch: int
    lr_floor: float = LR_FLOOR
    eps_start_epoch: float | None = None
    eps_end_epoch: float | None = None
    # derived in __post_init__: end step of each phase; (group start, group end, warmup steps) of each
    # phase's LR curve; [start, end) steps of the β ramp or None
    _ends: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _curves: tuple[tuple[int, int, int], ...] = field(init=False, repr=False, compare=False)
    _ramp: tuple[int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        phases = tuple(self.phases) if isinstance(self.phases, (list, tuple)) else None
        if not phases or not all(isinstance(p, Phase) for p in phases):
            raise ValueError(f"phases must be a non-empty sequence of Phase, got {self.phases!r}")
        steps_per_epoch = _validate.integer("steps_per_epoch", self.steps_per_epoch, minimum=1)
        lr_floor = _validate.real("lr_floor", self.lr_floor, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
        _check_phase_list(phases)
        ends = _phase_ends(phases, steps_per_epoch)
        values = {"phases": phases, "steps_per_epoch": steps_per_epoch, "lr_floor": lr_floor, "_ends": ends,
                  "_curves": _group_curves(phases, ends, steps_per_epoch),
                  "_ramp": _ramp_window(phases, ends, self.eps_start_epoch, self.eps_end_epoch)}
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._check_ramp_lr()

    def _check_ramp_lr(self):
        # β_t divides by η(t); with lr_floor 0 an LR curve ending inside the ramp would reach η = 0 there
        if self._ramp is None:
            return
        for t in range(*self._ramp):
            if self.lr_at(t) <= 0:
                raise ValueError(f"lr_floor=0 makes the LR zero at step {t} inside the ε-ramp; "
                                 f"use lr_floor > 0 or end no lr_group inside the ramp")

    # ------------------------------------------------------------------------------------------- queries
    def total_steps(self) -> int:
        return self._ends[-1]

    def total_epochs(self) -> float:
        return math.fsum(p.epochs for p in self.phases)

    def phase_bounds(self, index: int) -> tuple[int, int]:
        """[start, end) global steps of phase `index` (start == end for a zero-epoch phase)."""
        _validate.integer("index", index, minimum=0)
        if index >= len(self.phases):
            raise ValueError(f"index must be < {len(self.phases)} (number of phases), got {index}")
        return (self._ends[index - 1] if index else 0), self._ends[index]

    def phase_at(self, step: int) -> tuple[int, Phase]:
        self._check_step(step)
        # first phase ending after `step`; zero-step phases (end == start) are skipped naturally
        index = bisect.bisect_right(self._ends, step)
        return index, self.phases[index]

    def lr_at(self, step: int) -> float:
        index, phase = self.phase_at(step)
        start, end, warmup = self._curves[index]
        return _warmup_cosine(step - start, end - start, warmup, phase.lr, self.lr_floor)

    def beta_at(self, step: int) -> float:
        self._check_step(step)
        if self._ramp is None:
            return 1.0
        start, end = self._ramp
        if step < start:
            return 0.0
        if step >= end:
            return 1.0
        return (step - start + 1) / (end - start) * self.lr_at(end) / self.lr_at(step)

    def plan(self, step: int) -> StepPlan:
        index, phase = self.phase_at(step)
        return StepPlan(step=step, epoch=step // self.steps_per_epoch, phase=phase, phase_index=index,
                        lr=self.lr_at(step), beta=self.beta_at(step),
                        phase_start=step == self.phase_bounds(index)[0])

    def _check_step(self, step):
        _validate.integer("step", step, minimum=0)
        if step >= self.total_steps():
            raise ValueError(f"step must be < total_steps() = {self.total_steps()}, got {step}")

    # ------------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-serialisable description (for config.json and reports), with each phase's step bounds and
        the totals added; Schedule.from_dict ignores those derived keys."""
        phases = []
        for index, phase in enumerate(self.phases):
            start, end = self.phase_bounds(index)
            phases.append({**phase.to_dict(), "start_step": start, "end_step": end})
        return {"name": self.name, "steps_per_epoch": self.steps_per_epoch, "lr_floor": self.lr_floor,
                "eps_start_epoch": self.eps_start_epoch, "eps_end_epoch": self.eps_end_epoch,
                "total_epochs": self.total_epochs(), "total_steps": self.total_steps(), "phases": phases}

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        """Rebuild a schedule from `to_dict` output (e.g. read back from config.json to resume)."""
        missing = [k for k in ("name", "phases", "steps_per_epoch", "lr_floor") if k not in data]
        if missing:
            raise ValueError(f"data is missing keys {missing}; expected the output of Schedule.to_dict()")
        phase_keys = [f.name for f in fields(Phase)]
        phases = []
        for i, entry in enumerate(data["phases"]):
            absent = [k for k in phase_keys if k not in entry]
            if absent:
                raise ValueError(f"data['phases'][{i}] is missing keys {absent}")
            phases.append(Phase(**{k: entry[k] for k in phase_keys}))
        return cls(name=data["name"], phases=tuple(phases), steps_per_epoch=data["steps_per_epoch"],
                   lr_floor=data["lr_floor"], eps_start_epoch=data.get("eps_start_epoch"),
                   eps_end_epoch=data.get("eps_end_epoch"))


def _warmup_cosine(offset: int, length: int, warmup: int, peak: float, floor: float) -> float:
    """η at `offset` steps into a curve of `length` steps (formula in the module docstring)."""
    if offset < warmup:
        return peak * (offset + 1) / warmup
    cosine_steps = length - warmup
    progress = (offset - warmup) / (cosine_steps - 1) if cosine_steps > 1 else 0.0
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _check_phase_list(phases: tuple[Phase, ...]):
    names = [p.name for p in phases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"phases must have unique names, got duplicates {duplicates}")
    if math.fsum(p.epochs for p in phases) <= 0:
        raise ValueError(f"phases must total more than 0 epochs, got epochs {[p.epochs for p in phases]}")
    _check_lr_groups(phases)


def _check_lr_groups(phases: tuple[Phase, ...]):
    """One curve per group: its phases are contiguous and agree on the curve's peak and warmup."""
    closed = set()
    for previous, phase in zip((None,) + phases[:-1], phases):
        if previous is not None and previous.lr_group == phase.lr_group:
            for key in ("lr", "warmup_epochs"):
                if getattr(previous, key) != getattr(phase, key):
                    raise ValueError(f"phases {previous.name!r} and {phase.name!r} share lr_group "
                                     f"{phase.lr_group} but differ in {key}: {getattr(previous, key)!r} vs "
                                     f"{getattr(phase, key)!r}; one group is one curve")
            continue
        if phase.lr_group in closed:
            raise ValueError(f"lr_group {phase.lr_group} of phase {phase.name!r} is not contiguous; "
                             f"a group's phases must follow each other")
        if previous is not None:
            closed.add(previous.lr_group)
    for group in {p.lr_group for p in phases}:
        members = [p for p in phases if p.lr_group == group]
        group_epochs = math.fsum(p.epochs for p in members)
        if members[0].warmup_epochs > group_epochs * (1 + 1e-9):
            raise ValueError(f"warmup_epochs={members[0].warmup_epochs!r} of lr_group {group} exceeds the "
                             f"group's {group_epochs!r} epochs")


def _phase_ends(phases: tuple[Phase, ...], steps_per_epoch: int) -> tuple[int, ...]:
    ends, cumulative, previous_end = [], 0.0, 0
    for phase in phases:
        cumulative += phase.epochs
        at_least = previous_end + (1 if phase.epochs > 0 else 0)
        previous_end = max(_epochs_to_steps(cumulative, steps_per_epoch), at_least)
        ends.append(previous_end)
    return tuple(ends)


def _group_curves(phases, ends, steps_per_epoch) -> tuple[tuple[int, int, int], ...]:
    """(group start, group end, warmup steps) for each phase; groups are contiguous (checked before)."""
    starts = (0,) + ends[:-1]
    bounds = {}
    for phase, start, end in zip(phases, starts, ends):
        first_start, _ = bounds.get(phase.lr_group, (start, end))
        bounds[phase.lr_group] = (first_start, end)
    curves = []
    for phase in phases:
        start, end = bounds[phase.lr_group]
        warmup = min(_epochs_to_steps(phase.warmup_epochs, steps_per_epoch), end - start)
        curves.append((start, end, warmup))
    return tuple(curves)


def _ramp_window(phases, ends, eps_start_epoch, eps_end_epoch) -> tuple[int, int] | None:
    """[start, end) steps of the contiguous beta_ramp phases, checked against the eps_*_epoch fields."""
    ramp = [i for i, p in enumerate(phases) if p.beta_ramp]
    if not ramp:
        if eps_start_epoch is not None or eps_end_epoch is not None:
            raise ValueError(f"eps_start_epoch / eps_end_epoch must be None without a beta_ramp phase, got "
                             f"{eps_start_epoch!r} / {eps_end_epoch!r}")
        return None
    if ramp != list(range(ramp[0], ramp[-1] + 1)):
        raise ValueError(f"beta_ramp phases must be contiguous, got {[phases[i].name for i in ramp]}")
    start = ends[ramp[0] - 1] if ramp[0] else 0
    end = ends[ramp[-1]]
    if end >= ends[-1]:
        # β_t needs η at the step after the ramp (η(E_fm)), so some training must follow it
        raise ValueError(f"the beta_ramp phase {phases[ramp[-1]].name!r} must be followed by a phase with "
                         f"epochs > 0 (β uses the LR at the first step after the ramp)")
    expected = (math.fsum(p.epochs for p in phases[:ramp[0]]), math.fsum(p.epochs for p in phases[:ramp[-1] + 1]))
    for name, value, want in (("eps_start_epoch", eps_start_epoch, expected[0]),
                              ("eps_end_epoch", eps_end_epoch, expected[1])):
        if value is None or not math.isclose(_validate.non_negative(name, value), want, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"{name} must equal the cumulative epochs at the beta_ramp phases' "
                             f"{name[4:-6]} ({want!r}), got {value!r}")
    return start, end


# ------------------------------------------------------------------------------------------------ factories
def _scaled(paper_value: float, epochs: float, paper_epochs: float) -> float:
    return paper_value * epochs / paper_epochs


def _deps_eps_epochs(eps_epochs, epochs: float, fm_epochs: float, full_epochs: float) -> float:
    """E_ε: default the authors' 5 epochs at the full budget, scaled by epochs / full_epochs (so only the
    budget scale shortens it) and clamped to E_fm; an explicit value must fit inside E_fm; 0 = no ramp."""
    if eps_epochs is None:
        return min(_scaled(_DEPS_PAPER_EPS_EPOCHS, epochs, full_epochs), fm_epochs)
    eps_epochs = _validate.non_negative("eps_epochs", eps_epochs)
    if eps_epochs > fm_epochs * (1 + 1e-9):
        raise ValueError(f"eps_epochs must be <= the FM-warmup's end E_fm = fm_fraction * epochs = "
                         f"{fm_epochs!r} (the ramp ends at E_fm), got {eps_epochs!r}")
    return min(eps_epochs, fm_epochs)


def authors_sort_stage(expand_ratios) -> int:
    """The stage the authors (and OFA) sort with: len(expand ratios) - 2, at least 0 (1 for {3, 4, 6})."""
    return max(0, len(expand_ratios) - 2) if expand_ratios is not None else 1


def deps(epochs: float = PAPER_EPOCHS["deps"], *, lr: float, steps_per_epoch: int, fm_fraction: float = 0.5,
         eps_epochs: float | None = None, n_random: int = 2, warmup_epochs: float = 0.0,
         sort_stage: int | None = None, full_epochs: float = PAPER_EPOCHS["deps"],
         kernel_sizes=None, depths=None, expand_ratios=None, lr_floor: float = LR_FLOOR) -> Schedule:
    """DεpS (docs/method.md §3): one warmup+cosine curve over the whole run, in three phases.

    fm_warmup  [0, E_fm − E_ε): the max net alone (label-smoothed CE, dropout).
    eps_ramp   [E_fm − E_ε, E_fm): sandwich (max, min, n_random random), in-place KD, β_t ramp, channel
               sort (at `sort_stage`) on its first step.
    shrink     [E_fm, epochs): the same with β = 1.
    E_fm = fm_fraction · epochs (0 < fm_fraction < 1; authors: 150 of 270 on ImageNet, 100 of 200 CIFAR).
    E_ε = eps_epochs, default 5 · epochs / full_epochs (the authors' 5 epochs at a data set's full budget,
    `full_epochs`: 270 on ImageNet, 200 on CIFAR), clamped to E_fm; when E_ε = E_fm the fm_warmup phase is
    empty and left out (the ramp starts at step 0). An explicit eps_epochs larger than E_fm is an error;
    eps_epochs = 0 is DεpS without ε-shrinking (the paper's ablation: β = 1 as soon as shrinking starts, the
    sort on shrink's first step). sort_stage: OFA's sort stage, default the authors' (authors_sort_stage).
    warmup_epochs (default 0, as the authors) is the curve's warmup. kernel_sizes / depths / expand_ratios
    restrict the sampled space (authors: kernel_sizes=(7,)).
    """
    epochs = _validate.positive("epochs", epochs)
    _validate.positive("lr", lr)
    full_epochs = _validate.positive("full_epochs", full_epochs)
    fm_fraction = _validate.real("fm_fraction", fm_fraction, "a fraction strictly between 0 and 1",
                                lambda v: 0 < v < 1)
    fm_epochs = fm_fraction * epochs
    eps = _deps_eps_epochs(eps_epochs, epochs, fm_epochs, full_epochs)
    if sort_stage is None:
        sort_stage = authors_sort_stage(expand_ratios)
    space = {"kernel_sizes": kernel_sizes, "depths": depths, "expand_ratios": expand_ratios}
    curve = {"lr": lr, "lr_group": 0, "warmup_epochs": warmup_epochs}
    shrinking = {**curve, **space, "train_max": True, "n_random": n_random, "include_min": True,
                 "teacher": "inplace", "subnet_label_loss": False}
    sort = {"sort_channels": True, "sort_stage": sort_stage}
    phases = [
        Phase("fm_warmup", fm_epochs - eps, train_max=True, **curve, **space),
        Phase("eps_ramp", eps, beta_ramp=True, **sort, **shrinking),
        Phase("shrink", epochs - fm_epochs, **(sort if eps == 0 else {}), **shrinking),
    ]
    ramp = {"eps_start_epoch": fm_epochs - eps, "eps_end_epoch": fm_epochs} if eps > 0 else {}
    return Schedule("deps", tuple(p for p in phases if p.epochs > 0), steps_per_epoch, lr_floor, **ramp)


def ofa(epochs: float = PAPER_EPOCHS["ofa"], *, lr: float, steps_per_epoch: int,
        kernel_sizes=(3, 5, 7), depths=(2, 3, 4), expand_ratios=(3, 4, 6), lr_floor: float = LR_FLOOR) -> Schedule:
    """OFA progressive shrinking (docs/method.md §4), every phase length scaled by epochs / 605.

    At 605 epochs: teacher 180 (max net only), kernel 125 (5 warmup, 1 subnet/step), depth_34 25 (2),
    depth_234 125 (5 warmup, 2), expand_46 25 (4, channel sort at stage 0), expand_346 125 (5 warmup, 4,
    channel sort at stage 1, keeping the e = 4 prefix). Each phase is its own lr_group (its own warmup, then
    cosine). `lr` is the full model's peak (OFA: 2.6 at batch 2048): the teacher phase trains at lr, the kernel
    phase at lr · 0.96/2.6, the short phases at lr · 0.08/2.6 and the long ones at lr · 0.24/2.6. Subnets get label-smoothed CE + KD from the frozen trained full model; the max net is
    not trained separately after the teacher phase. The supernet's choices (kernel_sizes, depths,
    expand_ratios) define the restrictions: depth_34 / expand_46 use the two largest, later phases all, and
    kernels (then depths) stay elastic once opened. A single choice gives a degenerate but valid phase.
    The teacher phase has no warmup (OFA trains its teacher separately; docs/method.md §4).
    """
    epochs = _validate.positive("epochs", epochs)
    _validate.positive("lr", lr)
    kernels, depth_choices, expands = (_choices("kernel_sizes", kernel_sizes), _choices("depths", depths),
                                       _choices("expand_ratios", expand_ratios))
    for name, value in (("kernel_sizes", kernels), ("depths", depth_choices), ("expand_ratios", expands)):
        if value is None:
            raise ValueError(f"{name} must list the supernet's choices for OFA's phase restrictions, got None")
    spaces = {
        "teacher": (kernels[-1:], depth_choices[-1:], expands[-1:]),
        "kernel": (kernels, depth_choices[-1:], expands[-1:]),
        "depth_34": (kernels, depth_choices[-2:], expands[-1:]),
        "depth_234": (kernels, depth_choices, expands[-1:]),
        "expand_46": (kernels, depth_choices, expands[-2:]),
        "expand_346": (kernels, depth_choices, expands),
    }
    paper = PAPER_EPOCHS["ofa"]
    phases = []
    for group, (name, paper_epochs, paper_warmup, n_random, lr_scale) in enumerate(_OFA_PAPER_PHASES):
        k, d, e = spaces[name]
        shrinking = n_random > 0
        phases.append(Phase(
            name, _scaled(paper_epochs, epochs, paper), lr * lr_scale, group,
            warmup_epochs=_scaled(paper_warmup, epochs, paper), train_max=not shrinking, n_random=n_random,
            teacher="frozen" if shrinking else "none", subnet_label_loss=shrinking,
            sort_channels=name.startswith("expand"), sort_stage=authors_sort_stage(e), kernel_sizes=k, depths=d,
            expand_ratios=e))
    return Schedule("ofa", tuple(phases), steps_per_epoch, lr_floor)


def bignas(epochs: float = PAPER_EPOCHS["bignas"], *, lr: float, steps_per_epoch: int, n_random: int = 2,
           warmup_epochs: float | None = None, full_epochs: float = PAPER_EPOCHS["bignas"], kernel_sizes=None,
           depths=None, expand_ratios=None, lr_floor: float = LR_FLOOR) -> Schedule:
    """BigNAS sandwich rule from scratch (docs/method.md §5): one "sandwich" phase: max (label-smoothed CE, dropout)
    + min + n_random random subnets with in-place KD, no FM-warmup, no β ramp, one warmup+cosine curve.
    warmup_epochs defaults to 5 · epochs / full_epochs (5 epochs at the full budget, 400 in the paper)."""
    epochs = _validate.positive("epochs", epochs)
    _validate.positive("lr", lr)
    if warmup_epochs is None:
        warmup_epochs = _scaled(_BIGNAS_PAPER_WARMUP_EPOCHS, epochs, _validate.positive("full_epochs", full_epochs))
    phase = Phase("sandwich", epochs, lr, 0, warmup_epochs=warmup_epochs, train_max=True, n_random=n_random,
                  include_min=True, teacher="inplace", kernel_sizes=kernel_sizes, depths=depths,
                  expand_ratios=expand_ratios)
    return Schedule("bignas", (phase,), steps_per_epoch, lr_floor)


_FACTORIES = {"deps": deps, "ofa": ofa, "bignas": bignas}


def make_schedule(name: str, *, epochs: float | None = None, budget_scale: float | None = None,
                  steps_per_epoch: int, lr: float, full_epochs: float | None = None, **kwargs) -> Schedule:
    """Schedule `name` with epochs given directly or as budget_scale · full_epochs (exactly one of the two);
    full_epochs is the schedule's full budget on the data set (default PAPER_EPOCHS[name], the paper's
    ImageNet budget); kwargs go to the factory (deps / ofa / bignas)."""
    if name not in _FACTORIES:
        raise ValueError(f"name must be one of {sorted(_FACTORIES)}, got {name!r}")
    if epochs is not None and budget_scale is not None:
        raise ValueError(f"give epochs or budget_scale, not both; got epochs={epochs!r}, "
                         f"budget_scale={budget_scale!r}")
    if epochs is None and budget_scale is None:
        raise ValueError("one of epochs or budget_scale is required; got neither")
    full_epochs = PAPER_EPOCHS[name] if full_epochs is None else _validate.positive("full_epochs", full_epochs)
    if epochs is None:
        epochs = full_epochs * _validate.positive("budget_scale", budget_scale)
    if name != "ofa":  # DεpS's ramp and BigNAS's warmup are set at the full budget; OFA's phases are fractions
        kwargs["full_epochs"] = full_epochs
    return _FACTORIES[name](epochs, lr=lr, steps_per_epoch=steps_per_epoch, **kwargs)


# ----------------------------------------------------------------------------------------- subnet sampling
def subnet_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, step, index), identical on every rank: a hash of the triple,
    so distinct triples collide only with hash-collision probability and nearby steps do not get correlated
    streams as they could with seed + step arithmetic."""
    for name, value in (("seed", seed), ("step", step), ("index", index)):
        _validate.integer(name, value, minimum=0)
    return seeded_generator("subnet", int(seed), int(step), int(index))
