"""The specialization step end to end (docs/method.md §9): costs, latency table, budgets checked, subnets
evaluated on the search split, predictor, NSGA-II per budget, the chosen subnets measured for real on the test
set and as whole networks, exported; `search.json`, `search.md` and `pareto.png` written.

Everything measured is kept under RUN/search/ and reused by a rerun: the evaluation cache, the latency table,
the predictor (when its training data and settings are unchanged).
"""
from __future__ import annotations

import dataclasses
import io
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import deps_fast
from deps_fast._util import atomic_write, device_name, seeded_generator
from deps_fast.models import SubnetConfig
from deps_fast.search import report as search_report
from deps_fast.search.costs import METRICS, CostTable, count_macs, count_params, subnet_parts
from deps_fast.search.encoding import SubnetEncoding
from deps_fast.search.evaluate import EvaluationCache, fingerprint
from deps_fast.search.latency import LatencyTable, check_table, fit_scale, table_path
from deps_fast.search.nsga import Constraint, InfeasibleBudget, check_budgets, nsga2
from deps_fast.search.predictor import FitSettings, fit_predictor, holdout_split, kendall_tau, rmse
from deps_fast.search.source import Source
from deps_fast.trainer.evaluate import evaluate_subnet, final_subnets

BUDGET_FLAGS = {"mflops": "--max-mflops", "params_m": "--max-params-m", "latency_ms": "--max-latency-ms"}


@dataclass
class SearchSettings:
    """What the search does; `python -m deps_fast.search --help` describes each."""
    budgets: dict = field(default_factory=dict)   # metric -> budget, metrics as in costs.METRICS
    resolutions: Optional[tuple] = None            # None: the training resolution
    n_subnets: Optional[int] = None                # None: 200 on CPU, 1000 on GPU
    population: int = 100
    generations: int = 100
    search_images: Optional[int] = None            # None: a quarter of the training images, at most 10,000
    calib_images: int = 2000
    calib_batch: int = 200
    eval_batch: int = 500
    holdout: float = 0.2                           # share of evaluated subnets that tests the predictor
    predictor_epochs: int = 300
    latency_batch: int = 1
    latency_runtime: str = "torch"
    latency_warmup: int = 10
    latency_repeats: int = 50
    latency_check: int = 10                        # random subnets timed whole to check the table
    export: bool = True
    onnx: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class SplitData:
    """At one resolution: BN calibration batches (training images outside the search split), the search
    split's batches, the test set's batches."""
    calibration: list
    search: object
    test: object


@dataclass
class Target:
    """One deployment target: the budgets it must meet and the cost its front trades accuracy against."""
    name: str
    objective: str
    budgets: dict


def _log(message: str) -> None:
    print(f"[deps_fast.search] {message}", file=sys.stderr, flush=True)


def _targets(budgets: dict) -> list[Target]:
    targets = [Target(f"{BUDGET_FLAGS[m]} {b:g}", m, {m: b}) for m, b in budgets.items()]
    if len(budgets) > 1:
        targets.append(Target("all budgets together", next(iter(budgets)), dict(budgets)))
    return targets


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


class SearchRun:
    """One search over the supernet of `source` with `settings`; `run()` does all stages and returns the
    result dict (also written as search.json)."""

    def __init__(self, source: Source, settings: SearchSettings, device: torch.device, command: str = ""):
        self.source, self.s, self.device, self.command = source, settings, device, command
        self.net = source.supernet
        self.out = Path(source.run_dir) / "search"
        self.resolutions = tuple(settings.resolutions or (source.resolution,))
        self.encoding = SubnetEncoding(self.net, self.resolutions)
        self.n_subnets = settings.n_subnets or (1000 if device.type == "cuda" else 200)
        self.amp_dtype = torch.bfloat16 if device.type == "cuda" else None  # as the trainer evaluates
        self.times: dict[str, float] = {}
        self._data: dict = {}

    def stage(self, name: str, started: float) -> None:
        self.times[name] = round(time.perf_counter() - started, 2)

    # ---- costs -----------------------------------------------------------------------------------------------
    def build_costs(self) -> None:
        """Exact MFLOPs and parameter tables, then the latency table (measured only for parts it lacks); each
        budget is checked against the space's smallest value as soon as its table exists."""
        started = time.perf_counter()
        parts = {r: subnet_parts(self.net, r) for r in self.resolutions}
        parts_at = parts.__getitem__
        self.costs = {
            "mflops": CostTable.build("mflops", self.net, self.encoding,
                                      lambda p: count_macs(p.module, p.input_shape) / 1e6, parts_at),
            "params_m": CostTable.build("params_m", self.net, self.encoding,
                                        lambda p: count_params(p.module) / 1e6, parts_at),
        }
        self.check_budgets(("mflops", "params_m"))
        self.stage("costs", started)
        started = time.perf_counter()
        s = self.s
        self.latency = LatencyTable(table_path(self.out, self.device, s.latency_runtime, s.latency_batch),
                                    self.device, s.latency_runtime, s.latency_batch, s.latency_warmup,
                                    s.latency_repeats)
        all_parts = [p for fixed, blocks in parts.values() for p in fixed + list(blocks.values())]
        self.latency.measure(all_parts, progress=s.progress)
        raw = CostTable.build("latency_ms", self.net, self.encoding, self.latency, parts_at)
        # whole networks of random subnets fix the table's one scale factor (latency.fit_scale)
        checked = self.latency_check_configs()
        self.table_check = check_table(self.latency, self.net, checked, raw.of(checked), progress=s.progress)
        self.latency_fit = (fit_scale([r["table_ms"] for r in self.table_check["subnets"]],
                                      [r["measured_ms"] for r in self.table_check["subnets"]])
                            if checked else {"scale": 1.0, "checked_subnets": 0})
        self.raw_latency = raw
        self.costs["latency_ms"] = raw.scaled(self.latency_fit["scale"])
        self.check_budgets(("latency_ms",))
        self.stage("latency_table", started)

    def latency_check_configs(self) -> list[SubnetConfig]:
        """`latency_check` random subnets from their own seeded stream (not the evaluated ones: known before)."""
        out = []
        for i in range(self.s.latency_check):
            g = seeded_generator("latency-check", self.s.seed, i)
            c = self.net.sample_config(g)
            r = self.resolutions[int(torch.randint(len(self.resolutions), (1,), generator=g))]
            out.append(self.encoding.canonical(dataclasses.replace(c, resolution=r)))
        return out

    def cost_of(self, configs) -> dict:
        return {m: table.of(configs) for m, table in self.costs.items()}

    def check_budgets(self, metrics) -> None:
        """InfeasibleBudget before anything is evaluated (exact minimum; latency from the table)."""
        constraints = [Constraint(BUDGET_FLAGS[m], self.costs[m], b, METRICS[m])
                       for m, b in self.s.budgets.items() if m in metrics]
        check_budgets(constraints, lambda c: self._minimum(c.cost))

    def _minimum(self, table: CostTable) -> tuple:
        value, config = table.minimum()
        return value, str(config)

    # ---- data and evaluations ----------------------------------------------------------------------------------
    def data_at(self, resolution: int) -> "SplitData":
        """The batches at `resolution`, built once."""
        if resolution not in self._data:
            dataset = self.source.dataset(resolution)
            n_train = len(dataset.train_labels) if hasattr(dataset, "train_labels") else len(dataset.dataset("train"))
            self.n_search_images = self.s.search_images or min(10_000, n_train // 4)
            try:
                split = dataset.search_split(self.n_search_images, seed=self.s.seed)
            except ValueError as exc:
                raise ValueError(f"--search-images {self.n_search_images}: {exc}") from exc
            batch, device = self.s.eval_batch, self.device
            # the extracted subnets run channels-last: 1.5-1.9x faster on CPU (oneDNN), as on GPU
            self._data[resolution] = SplitData(
                calibration=split.calibration_batches(n_images=self.s.calib_images, batch_size=self.s.calib_batch,
                                                      seed=self.s.seed, device=device, channels_last=True),
                search=split.test_loader(batch, device=device, channels_last=True),
                test=dataset.test_loader(batch, device=device, channels_last=True))
        return self._data[resolution]

    def open_cache(self) -> None:
        """The evaluation cache, keyed by everything a measured top-1 depends on (builds the first split)."""
        self.data_at(self.resolutions[0])  # fixes the split size before the fingerprint
        s = self.s
        self.cache = EvaluationCache(self.out / "evaluations.jsonl", fingerprint(
            weights=self.source.identity["sha256"], data=self.source.data, search_images=self.n_search_images,
            calib_images=s.calib_images, calib_batch=s.calib_batch, seed=s.seed, protocol="extract+recalibrate+top1",
            amp=str(self.amp_dtype)))

    def prepare(self) -> None:
        """Everything a user's mistake can stop (budgets, data, split size), before any long stage."""
        self.build_costs()
        self.open_cache()

    def measure(self, split: str):
        """top1(config) on the search split or the test set, after BN recalibration."""
        def top1(config: SubnetConfig) -> float:
            data = self.data_at(config.resolution)
            return evaluate_subnet(self.net, config, data.calibration, getattr(data, split), self.device,
                                   self.amp_dtype, channels_last=True)
        return top1

    def sample_configs(self) -> list[SubnetConfig]:
        """n_subnets distinct random subnets (canonical), the i-th drawn from its own seeded stream, so a
        rerun with a larger n keeps the first ones (and their cached evaluations)."""
        chosen: dict = {}
        for i in range(50 * self.n_subnets):
            if len(chosen) == self.n_subnets:
                break
            g = seeded_generator("search-sample", self.s.seed, i)
            config = self.net.sample_config(g)
            r = self.resolutions[int(torch.randint(len(self.resolutions), (1,), generator=g))]
            chosen.setdefault(self.encoding.canonical(dataclasses.replace(config, resolution=r)), None)
        return list(chosen)

    def evaluate_sample(self) -> None:
        started = time.perf_counter()
        self.sample = self.sample_configs()
        reused_before = self.cache.reused
        self.sample_top1 = np.array(self.cache.evaluate(self.sample, "search", self.measure("search"),
                                                        self.s.progress, desc="evaluate subnets (search split)"))
        self.sample_reused = self.cache.reused - reused_before
        self.stage("evaluate_subnets", started)

    # ---- predictor -------------------------------------------------------------------------------------------
    def fit_predictor(self) -> None:
        started = time.perf_counter()
        s = self.s
        features = self.encoding.encode(self.sample)
        accuracy = self.sample_top1 / 100.0
        settings = FitSettings(epochs=s.predictor_epochs, seed=s.seed, progress=s.progress)
        recipe = {k: v for k, v in dataclasses.asdict(settings).items() if k != "progress"}
        key = fingerprint(features=features.tobytes().hex(), accuracy=accuracy.tolist(), settings=recipe,
                          holdout=s.holdout, version=deps_fast.__version__)
        path = self.out / "predictor.pt"
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
        if saved is not None and saved.get("key") == key:
            from deps_fast.search.predictor import AccuracyPredictor
            self.predictor = AccuracyPredictor(features.shape[1])
            self.predictor.load_state_dict(saved["state"])
            self.predictor_metrics = {k: float(v) for k, v in saved["metrics"].items()}
            self.predictor_metrics["reused"] = 1.0
        else:
            train, held = holdout_split(len(accuracy), s.holdout, s.seed)
            probe = fit_predictor(features[train], accuracy[train], settings)
            predicted = probe.predict(features[held])
            self.predictor_metrics = {
                "rmse_top1_points": 100 * rmse(predicted, accuracy[held]),
                "kendall_tau": kendall_tau(predicted, accuracy[held]),
                "baseline_rmse_top1_points": 100 * rmse(np.full(len(held), accuracy[train].mean()), accuracy[held]),
                "train_subnets": float(len(train)), "heldout_subnets": float(len(held))}
            self.predictor = fit_predictor(features, accuracy, settings)  # the search uses all N
            self.out.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save({"key": key, "state": self.predictor.state_dict(), "metrics": self.predictor_metrics}, buffer)
            atomic_write(path, buffer.getvalue())
        self.stage("predictor", started)

    def predicted(self, genomes: np.ndarray) -> np.ndarray:
        return 100.0 * self.predictor.predict(self.encoding.genome_features(genomes))

    # ---- search ----------------------------------------------------------------------------------------------
    def search(self) -> None:
        started = time.perf_counter()
        s = self.s
        upper = self.encoding.genome_upper
        self.fronts, self.chosen = {}, []
        for metric in ("mflops", "latency_ms"):  # the trade-off curves the plot shows
            self.fronts[metric] = nsga2(upper, self.predicted, self.costs[metric], population=s.population,
                                        generations=s.generations, seed=s.seed, progress=s.progress,
                                        label=f"front vs {METRICS[metric]}")
        for target in _targets(s.budgets):
            constraints = [Constraint(BUDGET_FLAGS[m], self.costs[m], b, METRICS[m]) for m, b in target.budgets.items()]
            cheapest = self.encoding.to_genomes([self.costs[m].minimum()[1] for m in target.budgets])
            front = nsga2(upper, self.predicted, self.costs[target.objective], constraints, population=s.population,
                          generations=s.generations, seed=s.seed, initial=cheapest, progress=s.progress,
                          label=f"search {target.name}")
            if len(front.genomes) == 0:
                asked = ", ".join(f"{BUDGET_FLAGS[m]} {b:g}" for m, b in target.budgets.items())
                lows = ", ".join(f"{BUDGET_FLAGS[m]} >= {self.costs[m].minimum()[0]:.4g}" for m in target.budgets)
                raise InfeasibleBudget(f"no subnet found that meets {asked} together (each alone needs {lows}); "
                                       f"raise one of them")
            best = int(np.argmax(front.accuracy))
            config = self.encoding.from_genomes(front.genomes[best:best + 1])[0]
            self.chosen.append((target, config, float(front.accuracy[best]), front))
        self.stage("search", started)

    # ---- the chosen subnets, measured for real ---------------------------------------------------------------
    def references(self) -> list[tuple[str, SubnetConfig]]:
        r = self.resolutions[0]
        return [(name, dataclasses.replace(c, resolution=r)) for name, c in final_subnets(self.net)]

    def measure_final(self) -> None:
        started = time.perf_counter()
        s = self.s
        chosen = [(f"chosen: {t.name}", c) for t, c, _, _ in self.chosen]
        named = chosen + self.references()
        configs = [c for _, c in named]
        # out of sample for the scale factor: the chosen and the uniform subnets, timed whole
        self.final_check = check_table(self.latency, self.net, configs, self.costs["latency_ms"].of(configs),
                                       progress=s.progress)
        measured = {SubnetConfig.from_dict(r["config"]): r["measured_ms"] for r in self.final_check["subnets"]}
        search_top1 = self.cache.evaluate(configs, "search", self.measure("search"), s.progress,
                                          desc="chosen + uniform (search split)")
        # the test set, once, for subnets already chosen
        test_top1 = self.cache.evaluate(configs, "test", self.measure("test"), s.progress,
                                        desc="chosen + uniform (test set)")
        costs = self.cost_of(configs)
        predicted = self.predicted(self.encoding.to_genomes(configs))
        self.rows = []
        for i, (name, config) in enumerate(named):
            self.rows.append({"name": name, "kind": "chosen" if name.startswith("chosen") else "uniform",
                              "config": config.to_dict(), "subnet": str(config),
                              "predicted_top1": float(predicted[i]), "search_top1": search_top1[i],
                              "test_top1": test_top1[i], "mflops": float(costs["mflops"][i]),
                              "params_m": float(costs["params_m"][i]),
                              "table_latency_ms": float(costs["latency_ms"][i]),
                              "raw_table_latency_ms": float(self.raw_latency.of([config])[0]),
                              "measured_latency_ms": measured[config]})
        self.stage("measure_chosen", started)

    def export(self) -> None:
        started = time.perf_counter()
        from deps_fast.search.export import export_subnet

        rows = {r["name"]: r for r in self.rows}
        self.exports = []
        from tqdm import tqdm

        for target, config, _, _ in tqdm(self.chosen, desc="export", unit="subnet", disable=not self.s.progress):
            static = self.net.extract(config)
            data = self.data_at(config.resolution)
            deps_fast.recalibrate_bn(static, None, data.calibration)  # the statistics it was measured with
            row = rows[f"chosen: {target.name}"]
            extra = {k: row[k] for k in ("test_top1", "search_top1", "predicted_top1", "mflops", "params_m",
                                         "measured_latency_ms")}
            extra["latency_device"] = self.latency.device_name
            self.exports.append(export_subnet(static, config, self.net.in_channels, self.out / "exports",
                                              _slug(target.name.lstrip("-")), onnx=self.s.onnx, extra=extra))
        self.stage("export", started)

    # ---- all of it -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        if not hasattr(self, "cache"):
            self.prepare()
        fit = self.latency_fit
        _log(f"{self.encoding.num_features}-feature encoding, resolutions {self.resolutions}; latency table "
             f"{self.latency.path.name}: {len(self.latency.entries)} parts, {len(self.latency.networks)} whole "
             f"networks ({self.latency.measured_now} measured now); scale {fit['scale']:.3f} from "
             f"{fit['checked_subnets']} subnets")
        self.evaluate_sample()
        self.fit_predictor()
        m = self.predictor_metrics
        _log(f"predictor on {len(self.sample)} subnets: held-out RMSE {m['rmse_top1_points']:.3f} top-1 points, "
             f"Kendall tau {m['kendall_tau']:.3f}")
        self.search()
        self.measure_final()
        if self.s.export and self.chosen:
            self.export()
        else:
            self.exports = []
        self.times["total"] = round(sum(self.times.values()), 2)
        result = self.result()
        paths = search_report.write(self.out, result)
        _log(f"wrote {paths['json']}, {paths['markdown'].name}, {paths['pareto'].name}")
        return result

    def result(self) -> dict:
        s = self.s
        fronts = {}
        for metric, front in self.fronts.items():
            configs = self.encoding.from_genomes(front.genomes)
            fronts[metric] = [{"subnet": str(c), "config": c.to_dict(), "predicted_top1": float(a), metric: float(v)}
                              for c, a, v in zip(configs, front.accuracy, front.cost)]
        return {
            "deps_fast": deps_fast.__version__, "torch": torch.__version__, "command": self.command,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(self.device), "source": self.source.identity, "run_dir": str(self.source.run_dir),
            "settings": {**dataclasses.asdict(s), "n_subnets": self.n_subnets, "resolutions": list(self.resolutions),
                         "search_images": self.n_search_images},
            "space": {"name": self.net.space_name, "kernel_sizes": list(self.net.kernel_sizes),
                      "expand_ratios": list(self.net.expand_ratios), "depths": list(self.net.depths),
                      "features": self.encoding.num_features,
                      "minimum": {m: self.costs[m].minimum()[0] for m in METRICS}},
            "evaluated": {"subnets": len(self.sample), "reused_from_cache": self.sample_reused,
                          "search_top1_mean": float(self.sample_top1.mean()),
                          "search_top1_min": float(self.sample_top1.min()),
                          "search_top1_max": float(self.sample_top1.max())},
            "predictor": self.predictor_metrics,
            "latency_table": {"path": str(self.latency.path), "parts": len(self.latency.entries),
                              "measured_now": self.latency.measured_now, "runtime": s.latency_runtime,
                              "batch": s.latency_batch, "fit": self.latency_fit,
                              "check_subnets": self.table_check["subnets"],
                              "chosen_and_uniform": self.final_check},
            "fronts": fronts,
            "subnets": self.rows,
            "comparisons": search_report.against_uniform(self.rows, [(t.name, t.budgets) for t, *_ in self.chosen]),
            "exports": self.exports,
            "times_s": self.times,
        }
