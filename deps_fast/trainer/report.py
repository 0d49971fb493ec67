"""Run reports: the numbers of one training run as report.json, report.md and pareto.png, and the comparison of
several runs (the paper's Table 1 and the accuracy/MFLOPs Pareto plot).

A report is a `Report` (dataclasses below) with `to_dict` / `from_dict`; `from_dict` validates, naming the key path
of anything wrong, so a foreign `--compare` file fails clearly. `Report.from_training` turns the trainer's numbers
(wall time per phase, evaluated subnets) into a report; the layout lives here, not in the training loop.
Everything here is pure Python and matplotlib, without torch, so reports can be read, compared and plotted on any
machine, e.g. after copying the report.json files of runs on different GPUs into one place.

Files are written atomically (temporary file in the same directory, fsync, os.replace), so an interrupted run never
leaves a half-written report.json that a later `--compare FILE` would choke on.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from deps_fast._util import atomic_write

PathLike = Union[str, os.PathLike]
ReportSource = Union[PathLike, dict, "Report"]

REPORT_VERSION = 1
# The paper's Table 1 compares every method at the same subnets: "smallest" is D2-E3-K7, "mean" is over the six
# uniform K7 subnets (d, e) below, "largest" is the max net; the min subnet (OFA's is K3) is reported apart.
UNIFORM_K7 = ((2, 3), (3, 3), (4, 3), (4, 4), (3, 6), (4, 6))
TABLE1_HEADER = ("schedule", "D2-E3-K7 top-1", "largest top-1", "mean top-1 (uniform K7)", "min subnet top-1",
                 "epochs", "device-min/epoch", "device-hours", "training resolution")

# Size of pareto.png in inches; at PNG_DPI it is 840 x 540 pixels (no bbox "tight", so the size is predictable).
FIGURE_SIZE = (7.0, 4.5)
PNG_DPI = 120

# JSON types a field accepts, by its annotation (a float field takes ints too; bool is never a number)
_JSON_TYPES = {str: (str,), int: (int,), float: (int, float), dict: (dict,)}


def _json_types(cls) -> dict:
    """{field name: (accepted types, required)} from the dataclass's annotations."""
    spec = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        spec[name] = (_JSON_TYPES[base], not optional)
    return spec


# ----------------------------------------------------------------------------------------------- the records

@dataclass(frozen=True)
class RunInfo:
    """What was trained, where and how."""
    name: str
    schedule: str
    space: str
    data: str
    device: str
    world_size: int
    epochs: float
    batch_size: Optional[int] = None
    resolution: Optional[int] = None
    width_mult: Optional[float] = None
    deps_fast: Optional[str] = None
    torch: Optional[str] = None
    command: Optional[str] = None
    started: Optional[str] = None
    finished: Optional[str] = None
    eval_s: Optional[float] = None
    lr: Optional[float] = None                   # the full model's peak LR
    full_epochs: Optional[float] = None          # the schedule's full budget the run was a fraction of
    augment: Optional[str] = None
    training_resolution: Optional[str] = None    # "fixed" or "elastic MIN-MAX step S" (OFA's recipe)
    sort_stages: Optional[str] = None            # where OFA's channel sort ran, at which stage
    lr_changes: Optional[str] = None             # --lr changed on --resume: "0.1 -> 0.05 at step 120"
    skipped_images: Optional[int] = None         # unreadable images skipped (--skip-bad-images)
    skipped_steps: Optional[int] = None          # steps not applied (non-finite or exploding loss/gradient)


@dataclass(frozen=True)
class SubnetResult:
    """One evaluated subnet: its cost and its top-1 after BN recalibration."""
    name: str
    mflops: float
    params_m: float
    top1: float
    config: Optional[dict] = None


@dataclass(frozen=True)
class _Cost:
    """Training time of a stretch of steps (the fields a phase and the whole run share)."""
    epochs: float
    steps: int
    wall_s: float
    device_hours: float
    images_per_s: float


@dataclass(frozen=True)
class PhaseCost(_Cost):
    """Training time of one schedule phase."""
    name: str


@dataclass(frozen=True)
class Totals(_Cost):
    """Training time of the whole run (evaluation excluded)."""
    device_min_per_epoch: float


@dataclass(frozen=True)
class Report:
    """One training run's report. Layout of `to_dict()`: {"version": 1, "run": {...}, "subnets": [{...}, ...]
    (at least one, unique names), "phases": [{...}, ...], "total": {...}, "evals": [...]}."""
    run: RunInfo
    subnets: tuple[SubnetResult, ...]
    phases: tuple[PhaseCost, ...]
    total: Totals
    evals: tuple = ()  # per-epoch evaluations as the trainer logged them ({"epoch", "step", "top1": {...}})
    version: int = REPORT_VERSION

    @classmethod
    def from_training(cls, run: RunInfo, subnets: Sequence[SubnetResult], phase_walls: Sequence[tuple],
                      batch_size: int, world_size: int, evals: Sequence[dict] = ()) -> "Report":
        """The report of a run from its numbers: `phase_walls` holds (name, epochs, steps, wall seconds) per
        phase; device-hours are wall time x devices, images/s count the global batch."""
        def cost(epochs, steps, wall):
            return dict(epochs=epochs, steps=steps, wall_s=wall, device_hours=wall * world_size / 3600,
                        images_per_s=steps * batch_size / wall if wall else 0.0)

        phases = tuple(PhaseCost(name=name, **cost(epochs, steps, wall)) for name, epochs, steps, wall in phase_walls)
        epochs = math.fsum(p.epochs for p in phases)
        wall = math.fsum(p.wall_s for p in phases)
        total = Totals(**cost(epochs, sum(p.steps for p in phases), wall),
                       device_min_per_epoch=wall * world_size / 60 / epochs if epochs else 0.0)
        return cls(run, tuple(subnets), phases, total, tuple(evals))

    def to_dict(self) -> dict:
        """JSON-ready; optional fields that are None (and an empty evals list) are left out."""
        def record(obj):
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if getattr(obj, f.name) is not None}
        data = {"version": self.version, "run": record(self.run), "subnets": [record(s) for s in self.subnets],
                "phases": [record(p) for p in self.phases], "total": record(self.total)}
        if self.evals:
            data["evals"] = list(self.evals)
        return data

    @classmethod
    def from_dict(cls, data, where: str = "report") -> "Report":
        """Validate `data` (a parsed report.json) and build the report; a ValueError names the offending key
        path, e.g. "report['subnets'][2]['top1']". Keys this version does not know are ignored."""
        _check_value(where, data, dict)
        version = _require(data, "version", where, int)
        if version != REPORT_VERSION:
            raise ValueError(f"{where}['version'] is {version!r}; only version {REPORT_VERSION} is supported")
        run = _record(RunInfo, _require(data, "run", where, dict), f"{where}['run']")
        subnet_list = _require(data, "subnets", where, list)
        if not subnet_list:
            raise ValueError(f"{where}['subnets'] is empty; a report needs at least one evaluated subnet")
        subnets = tuple(_record(SubnetResult, s, f"{where}['subnets'][{i}]") for i, s in enumerate(subnet_list))
        _check_unique_names(subnets, f"{where}['subnets']")
        phases = tuple(_record(PhaseCost, p, f"{where}['phases'][{i}]")
                       for i, p in enumerate(_require(data, "phases", where, list)))
        total = _record(Totals, _require(data, "total", where, dict), f"{where}['total']")
        evals = data.get("evals", [])
        _check_value(f"{where}['evals']", evals, list)
        return cls(run, subnets, phases, total, tuple(evals), version)


def _record(cls, mapping, where: str):
    _check_value(where, mapping, dict)
    values = {}
    for name, (types, required) in _json_types(cls).items():
        if required:
            values[name] = _require(mapping, name, where, types)
        elif mapping.get(name) is not None:
            values[name] = _check_value(f"{where}[{name!r}]", mapping[name], types)
    return cls(**values)


def _require(mapping: dict, key: str, where: str, types):
    if key not in mapping:
        raise ValueError(f"{where}[{key!r}] is missing")
    return _check_value(f"{where}[{key!r}]", mapping[key], types)


def _check_value(where: str, value, types):
    """Type check; numbers must also be finite, because NaN/inf cannot be written as strict JSON."""
    allowed = types if isinstance(types, tuple) else (types,)
    is_bool_as_number = isinstance(value, bool) and bool not in allowed
    if is_bool_as_number or not isinstance(value, allowed):
        names = " or ".join(t.__name__ for t in allowed)
        raise ValueError(f"{where} must be {names}, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return value


def _check_unique_names(records, where: str):
    # subnet names are the rows of the side-by-side comparison, so two rows with one name would be ambiguous
    seen = {}
    for index, record in enumerate(records):
        if record.name in seen:
            raise ValueError(f"{where}[{index}]['name'] {record.name!r} repeats {where}[{seen[record.name]}]"
                             f"; subnet names must be unique")
        seen[record.name] = index


def validate_report(report) -> dict:
    """Check that the dict `report` is a valid report (see `Report.from_dict`); return it unchanged."""
    Report.from_dict(report)
    return report


# ---------------------------------------------------------------------------------------------- load / write

def load_report(path: PathLike) -> dict:
    """Read and validate a report.json and return its dict (`Report.from_dict` makes it a Report); a missing,
    unreadable or invalid file raises ValueError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"report file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"report file {str(path)!r} cannot be read: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"report file {str(path)!r} is not valid JSON: {error}") from None
    try:
        return validate_report(data)
    except ValueError as error:
        raise ValueError(f"report file {str(path)!r}: {error}") from None


def write_report(out_dir: PathLike, report: ReportSource, compare: Iterable[ReportSource] = ()) -> dict:
    """Write report.json, report.md and pareto.png (this run and every report in `compare`: paths, dicts or
    Reports) into `out_dir`, created if needed. Returns {"json": Path, "markdown": Path, "pareto": Path}."""
    report = _load_one(report, "report")
    others = _load_all(compare, "compare")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "pareto": out_dir / "pareto.png"}
    atomic_write(paths["json"], _to_json(report).encode("utf-8"))
    atomic_write(paths["markdown"], render_markdown(report, others).encode("utf-8"))
    plot_pareto([report, *others], paths["pareto"])
    return paths


def _to_json(report: Report) -> str:
    # allow_nan=False: validation already refused NaN, so this is a second guard that output stays strict JSON
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _load_all(sources, argument: str) -> list:
    """Reports from a list of paths, dicts and/or Reports. A single one is accepted too, because iterating a
    path string would otherwise silently treat each character as a file name."""
    if isinstance(sources, (str, os.PathLike, dict, Report)):
        sources = [sources]
    try:
        sources = list(sources)
    except TypeError:
        raise ValueError(f"{argument} must be a list of report paths or dicts, got "
                         f"{type(sources).__name__}") from None
    return [_load_one(source, f"{argument}[{index}]") for index, source in enumerate(sources)]


def _load_one(source, where: str) -> Report:
    if isinstance(source, Report):
        return source
    if isinstance(source, dict):
        try:
            return Report.from_dict(source)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if isinstance(source, (str, os.PathLike)):
        return Report.from_dict(load_report(source))
    raise ValueError(f"{where} must be a report dict or a path to report.json, got {type(source).__name__}")


# ---------------------------------------------------------------------------------------------------- numbers

def uniform_dek(subnet: SubnetResult) -> Optional[tuple]:
    """(d, e, k) of a uniform subnet, read from its config (else from a "D2-E3-K7..." name); None otherwise."""
    config = subnet.config or {}
    if all(isinstance(config.get(key), list) and config[key] for key in ("ks", "es", "ds")):
        ks, es, ds = config["ks"], config["es"], config["ds"]
        uniform = len(set(ks)) == len(set(es)) == len(set(ds)) == 1
        return (ds[0], es[0], ks[0]) if uniform else None
    match = re.match(r"D(\d+)-E(\d+)-K(\d+)(?![\d-])", subnet.name)
    return tuple(int(g) for g in match.groups()) if match else None


def summary_row(report: ReportSource) -> dict:
    """The paper's Table 1 row of one run: "smallest" is D2-E3-K7, "largest" the subnet with the most MFLOPs
    (the max net), "mean" over the six uniform K7 subnets evaluated, and the min subnet (fewest MFLOPs) apart.
    A report without those K7 subnets (e.g. a space without k = 7) falls back to the fewest MFLOPs and the
    mean over all subnets, and `comparison` says so."""
    report = _load_one(report, "report")
    by_flops = _sorted_subnets(report)
    by_dek = {uniform_dek(s): s for s in by_flops}
    k7 = [by_dek[(d, e, 7)] for d, e in UNIFORM_K7 if (d, e, 7) in by_dek]
    smallest = by_dek.get((2, 3, 7))
    comparison = "D2-E3-K7; mean of uniform K7" if smallest is not None and k7 else \
        "fallback: fewest MFLOPs; mean of all evaluated subnets (no uniform K7 subnets)"
    mean_over = k7 or by_flops
    return {"name": report.run.name, "schedule": report.run.schedule,
            "smallest_top1": (smallest or by_flops[0]).top1, "largest_top1": by_flops[-1].top1,
            "mean_top1": sum(s.top1 for s in mean_over) / len(mean_over), "mean_count": len(mean_over),
            "min_name": by_flops[0].name, "min_top1": by_flops[0].top1, "comparison": comparison,
            "epochs": report.total.epochs, "device_min_per_epoch": report.total.device_min_per_epoch,
            "device_hours": report.total.device_hours,
            "training_resolution": report.run.training_resolution or "fixed"}


def _sorted_subnets(report: Report) -> list:
    return sorted(report.subnets, key=lambda subnet: subnet.mflops)  # stable: ties keep report order


def run_labels(reports: list) -> list:
    """One label per report: its schedule, plus the run name where schedules repeat, plus "#k" where even the
    names repeat, so every line of a plot and every column of a table can be told apart."""
    reports = _load_all(reports, "reports")
    schedules = [report.run.schedule for report in reports]
    labels = [schedule if schedules.count(schedule) == 1 else f"{schedule} ({report.run.name})"
              for schedule, report in zip(schedules, reports)]
    return [label if labels.count(label) == 1 else f"{label} #{labels[:index].count(label) + 1}"
            for index, label in enumerate(labels)]


def format_top1(value) -> str:
    return f"{value:.2f}"


def format_mflops(value) -> str:
    return f"{value:.1f}"


def format_significant(value, digits: int = 3) -> str:
    """`digits` significant digits without scientific notation (0.0833, 1.25, 12.5, 1234)."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def format_epochs(value) -> str:
    return f"{value:g}"


def format_duration(seconds) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_rate(value) -> str:
    return f"{value:,.1f}"


# --------------------------------------------------------------------------------------------------- markdown

def render_markdown(report: ReportSource, compare: Iterable[ReportSource] = ()) -> str:
    """report.md: title, run description, Table 1 (this run and every `compare` report), subnets, phases."""
    report = _load_one(report, "report")
    others = _load_all(compare, "compare")
    run = report.run
    lines = [f"# {run.name}", "", _describe_run(run), ""]
    if run.command:
        lines += [f"Command: {_inline_code(run.command)}", ""]
    lines += ["## Table 1", "", *_table1_lines([report, *others]), ""]
    lines += ["## Subnets", "", *_subnet_lines(report), ""]
    lines += ["## Phases", "", *_phase_lines(report)]
    return "\n".join(lines) + "\n"


def _describe_run(run: RunInfo) -> str:
    parts = [f"Device: {run.device}", f"world size {run.world_size}", f"data {run.data}",
             f"space {run.space}", f"schedule {run.schedule}", f"torch {run.torch or 'n/a'}",
             f"deps_fast {run.deps_fast or 'n/a'}"]
    optional = (("batch", run.batch_size), ("resolution", run.resolution),
                ("training resolution", run.training_resolution), ("peak LR", run.lr), ("augment", run.augment),
                ("channel sort", run.sort_stages), ("LR changed on resume:", run.lr_changes),
                ("unreadable images skipped:", run.skipped_images or None),
                ("training steps skipped (not applied):", run.skipped_steps or None))
    parts += [f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}"
              for label, value in optional if value is not None]
    return " · ".join(parts)


def _inline_code(text: str) -> str:
    # a fence one backtick longer than any run inside keeps commands with backticks intact
    longest, current = 0, 0
    for char in text:
        current = current + 1 if char == "`" else 0
        longest = max(longest, current)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _table(header, rows) -> list:
    cells = [[_cell(value) for value in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in cells)]


def _cell(value) -> str:
    # a "|" inside a cell would split it into two columns
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table1_lines(reports: list) -> list:
    rows = []
    for label, report in zip(run_labels(reports), reports):
        row = summary_row(report)
        rows.append([label, format_top1(row["smallest_top1"]), format_top1(row["largest_top1"]),
                     format_top1(row["mean_top1"]), f"{format_top1(row['min_top1'])} ({row['min_name']})",
                     format_epochs(row["epochs"]), format_significant(row["device_min_per_epoch"]),
                     format_significant(row["device_hours"]), row["training_resolution"]])
    return _table(TABLE1_HEADER, rows)


def _subnet_lines(report: dict) -> list:
    rows = [[subnet.name, format_mflops(subnet.mflops), f"{subnet.params_m:.2f}",
             format_top1(subnet.top1)] for subnet in _sorted_subnets(report)]
    return _table(("subnet", "MFLOPs", "params (M)", "top-1 %"), rows)


def _phase_lines(report: dict) -> list:
    rows = [_phase_row(phase.name, phase) for phase in report.phases]
    rows.append(_phase_row("**total**", report.total))
    return _table(("phase", "epochs", "steps", "wall time", "device-hours", "images/s"), rows)


def _phase_row(name: str, numbers) -> list:
    return [name, format_epochs(numbers.epochs), str(numbers.steps), format_duration(numbers.wall_s),
            format_significant(numbers.device_hours), format_rate(numbers.images_per_s)]


# ------------------------------------------------------------------------------------------------------- plot

def plot_pareto(reports, path: PathLike, title: Optional[str] = None) -> Path:
    """Save top-1 (y) against MFLOPs (x) as a PNG, one line with markers per report (paths or dicts).
    Returns the path written (its parent directory is created if needed)."""
    reports = _load_all(reports, "reports")
    if not reports:
        raise ValueError("reports is empty; plot_pareto needs at least one report")
    # Figure + the Agg canvas directly, never pyplot: no display is needed, no global backend is switched, and
    # nothing stays open in pyplot's figure registry after a long run of many plots.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, report in zip(run_labels(reports), reports):
        subnets = _sorted_subnets(report)
        axes.plot([s.mflops for s in subnets], [s.top1 for s in subnets], marker="o", label=label)
    axes.set_xlabel("MFLOPs")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(title if title is not None else _default_title(reports))
    axes.grid(True, alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
    return path


def _default_title(reports: list) -> str:
    pairs = sorted({f"{report.run.space} on {report.run.data}" for report in reports})
    return "top-1 vs MFLOPs: " + ", ".join(pairs)


# ---------------------------------------------------------------------------------------------------- combine

def combine(paths_or_reports, out_dir: PathLike) -> dict:
    """The GPU-hour benchmark's summary of several runs: comparison.md (Table 1, the runs, the subnets' top-1
    side by side) and pareto.png overlaying all runs, in `out_dir`. Returns {"markdown": Path, "pareto": Path}."""
    reports = _load_all(paths_or_reports, "paths_or_reports")
    if not reports:
        raise ValueError("paths_or_reports is empty; combine needs at least one report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "comparison.md", "pareto": out_dir / "pareto.png"}
    atomic_write(paths["markdown"], render_comparison(reports).encode("utf-8"))
    plot_pareto(reports, paths["pareto"])
    return paths


def render_comparison(reports) -> str:
    reports = _load_all(reports, "reports")
    labels = run_labels(reports)
    lines = ["# Comparison", "", "## Table 1", "", *_table1_lines(reports), "", "## Runs", ""]
    lines += [f"- **{label}** ({report.run.name}): {_describe_run(report.run)}"
              + (f"; command {_inline_code(report.run.command)}" if report.run.command else "")
              for label, report in zip(labels, reports)]
    lines += ["", "## Subnet top-1 (%)", "", *_side_by_side_lines(reports, labels)]
    return "\n".join(lines) + "\n"


def _side_by_side_lines(reports: list, labels: list) -> list:
    """Subnet names as rows (by MFLOPs), one column per run; "–" where a run did not evaluate that subnet."""
    mflops = {}
    for report in reports:
        for subnet in report.subnets:
            mflops.setdefault(subnet.name, subnet.mflops)  # same space, same subnet: same MFLOPs
    names = sorted(mflops, key=lambda name: mflops[name])
    top1 = [{subnet.name: subnet.top1 for subnet in report.subnets} for report in reports]
    rows = [[name, format_mflops(mflops[name]),
             *(format_top1(run[name]) if name in run else "–" for run in top1)] for name in names]
    return _table(("subnet", "MFLOPs", *labels), rows)
