"""Shared benchmark harness: timing, copy bandwidth, environment, result files.

GPU: CUDA-event timing after warm-up, median of repeats, inputs rotated so repeats do not hit a warm cache.
CPU: perf_counter around each call, median of repeats. Every result file records device, versions, date and
the exact command, so a number in the README can always be traced to the run that produced it.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from deps_fast._util import device_name


def fast_backends(device: torch.device) -> list[str]:
    """The deps_fast kernel backends (not the torch reference) that run on `device` here."""
    import deps_fast
    return [name for name, why in deps_fast.available_backends(device).items() if why is None and name != "torch"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[int], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of fn(i) over `repeats` calls (i rotates input sets) after `warmup` calls."""
    for i in range(warmup):
        fn(i)
    sync(device)
    times = []
    for i in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(device: torch.device, mbytes: int | None = None) -> float:
    """The device's measured copy bandwidth: bytes read + bytes written per second by a large tensor copy."""
    mbytes = mbytes or (1024 if device.type == "cuda" else 256)
    n = mbytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda i: dst.copy_(src), device, warmup=3, repeats=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def environment(device: torch.device) -> dict:
    env = {
        "device": device_name(device),  # the name the trainer's reports use too
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "host": platform.node(),
    }
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()[:60]


def write_results(name: str, env: dict, rows: list[dict], out_dir: str) -> str:
    """Write <out_dir>/<name>-<device>-<date>.json (env + rows) and a .csv of the rows; return the json path."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}-{slug(env['device'])}-{env['date'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    if rows:
        with open(stem + ".csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return stem + ".json"
