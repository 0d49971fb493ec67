"""Latency measured on the user's own device: a lookup table of every distinct part shape, checked against
whole networks.

Each distinct part (stem, fixed first block, every elastic block at every kernel size / expand ratio / input
shape, head; `costs.subnet_parts`) is timed on its own at the latency batch size: warm-up calls, then the
median of repeated calls, each call bracketed by a device synchronisation on GPU. A subnet's latency is the
sum of its parts (OFA's lookup-table rule). The table is a JSON file keyed by part shape, with the device name,
runtime and batch size inside; it is reused and only shapes it lacks are measured. `check_table` times whole
networks and reports how far the sums are from them.

Runtimes: "torch" (eager, inference mode) or "onnxruntime" (each part exported with the torch.export-based
ONNX exporter and run by an ONNX Runtime CPU session), which is what deployments often run.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from deps_fast import _validate
from deps_fast._util import atomic_write, device_name
from deps_fast.search.costs import Part, shape_key

RUNTIMES = ("torch", "onnxruntime")
TABLE_VERSION = 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall milliseconds of `call()` over `repeats` calls after `warmup` calls, each call
    synchronised on GPU (so the time is the work's, not the launch's)."""
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def runner(module: nn.Module, input_shape, *, batch: int, device: torch.device, runtime: str) -> Callable:
    """A no-argument callable that runs `module` once on a fixed random batch in `runtime`."""
    module = module.eval()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    if runtime == "torch":
        def call():
            with torch.inference_mode():
                return module(x)
        return call
    from deps_fast.search.export import onnx_session  # lazy: onnx, onnxscript and onnxruntime are optional

    session, name = onnx_session(module.cpu(), x.cpu())
    feed = {name: x.cpu().numpy()}
    return lambda: session.run(None, feed)


class LatencyTable:
    """{part key: median ms} for one device, runtime and batch size, stored as JSON at `path`."""

    def __init__(self, path: Path, device: torch.device, runtime: str = "torch", batch: int = 1,
                 warmup: int = 10, repeats: int = 50):
        self.path, self.device = Path(path), torch.device(device)
        self.runtime = _validate.one_of("latency runtime", runtime, RUNTIMES)
        if self.runtime == "onnxruntime" and self.device.type != "cpu":
            raise ValueError("--latency-runtime onnxruntime times the CPU execution provider; use --device cpu")
        self.batch = _validate.positive_int("latency batch", batch)
        self.warmup = _validate.integer("latency warmup", warmup, minimum=0)
        self.repeats = _validate.positive_int("latency repeats", repeats)
        self.device_name = device_name(self.device)
        self.entries: dict[str, float] = {}    # part key -> ms
        self.networks: dict[str, float] = {}   # whole-network key -> ms (the checks)
        self.measured_now = 0
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text())
        except ValueError:
            return  # a damaged table is measured again (it is only a cache)
        same = (data.get("version") == TABLE_VERSION and data.get("device") == self.device_name
                and data.get("runtime") == self.runtime and data.get("batch") == self.batch)
        if same:
            self.entries = {k: float(v) for k, v in data.get("entries", {}).items()}
            self.networks = {k: float(v) for k, v in data.get("networks", {}).items()}

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": TABLE_VERSION, "device": self.device_name, "runtime": self.runtime,
                "batch": self.batch, "warmup": self.warmup, "repeats": self.repeats, "unit": "ms",
                "torch": torch.__version__, "entries": dict(sorted(self.entries.items())),
                "networks": dict(sorted(self.networks.items()))}
        return atomic_write(self.path, json.dumps(data, indent=1).encode())

    def time_module(self, module: nn.Module, input_shape) -> float:
        call = runner(module, input_shape, batch=self.batch, device=self.device, runtime=self.runtime)
        return median_ms(call, self.device, self.warmup, self.repeats)

    def measure(self, parts: list[Part], progress: bool = True) -> None:
        """Time every part whose key the table lacks (one measurement per distinct key), then save."""
        todo = {}
        for part in parts:
            if part.key not in self.entries:
                todo.setdefault(part.key, part)
        if not todo:
            return
        from tqdm import tqdm

        for key, part in tqdm(todo.items(), desc="latency table", unit="part", disable=not progress):
            self.entries[key] = self.time_module(part.module, part.input_shape)
            self.measured_now += 1
        self.save()

    def __call__(self, part: Part) -> float:
        return self.entries[part.key]

    def network_ms(self, supernet, config) -> float:
        """Latency of the whole extracted subnet `config`, timed like the parts (kept in the table's file)."""
        shape = (supernet.in_channels, config.resolution, config.resolution)
        static = supernet.extract(config)
        key = shape_key("net", shape, static)
        if key not in self.networks:
            self.networks[key] = self.time_module(static, shape)
            self.measured_now += 1
        return self.networks[key]


def check_table(table: LatencyTable, supernet, configs, predicted: np.ndarray, progress: bool = True) -> dict:
    """Whole-network latency of `configs` against the table's predictions `predicted`: per subnet, and the
    mean absolute and mean signed relative error (prediction / measurement - 1)."""
    from tqdm import tqdm

    rows = []
    for config, pred in tqdm(list(zip(configs, predicted)), desc="latency check", unit="net", disable=not progress):
        measured = table.network_ms(supernet, config)
        rows.append({"config": config.to_dict(), "name": str(config), "table_ms": float(pred),
                     "measured_ms": measured, "relative_error": float(pred) / measured - 1.0})
    table.save()
    errors = np.array([r["relative_error"] for r in rows])
    return {"subnets": rows, "mean_abs_relative_error": float(np.abs(errors).mean()) if rows else None,
            "mean_relative_error": float(errors.mean()) if rows else None}


def fit_scale(table_ms, measured_ms) -> dict:
    """One factor from table sums to whole-network latency: the median of measured / table over the checked
    subnets (robust to an outlier). Parts timed alone run with their weights and input hot in cache and
    without the calls between them, so the sums are low by a fairly constant fraction. The error after scaling
    is estimated leave-one-out (each subnet predicted with the factor of the others)."""
    table_ms, measured_ms = np.asarray(table_ms, float), np.asarray(measured_ms, float)
    ratios = measured_ms / table_ms
    scale = float(np.median(ratios))
    if len(ratios) > 1:
        loo = [np.median(np.delete(ratios, i)) * table_ms[i] / measured_ms[i] - 1 for i in range(len(ratios))]
        loo_error = float(np.abs(loo).mean())
    else:
        loo_error = None
    return {"scale": scale, "checked_subnets": len(ratios),
            "raw_mean_abs_relative_error": float(np.abs(1 / ratios - 1).mean()),
            "raw_mean_relative_error": float((1 / ratios - 1).mean()),
            "scaled_mean_abs_relative_error_loo": loo_error}


def table_path(search_dir: Path, device: torch.device, runtime: str, batch: int) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in device_name(device)).strip("-").lower()
    while "--" in slug:
        slug = slug.replace("--", "-")
    return Path(search_dir) / f"latency-{slug[:60]}-{runtime}-b{batch}.json"

