"""Measured accuracy of subnets, cached on disk so an interrupted or repeated search never measures twice.

Each evaluation (the trainer's protocol, docs/method.md §6: extract, recalibrate BN, top-1) is appended to a
JSON-lines file as soon as it is done, flushed and fsynced; a line cut short by a crash is skipped on reading.
Every line carries a fingerprint of everything the number depends on (checkpoint, split, calibration,
protocol), so a changed input never reuses a stale number; lines of other fingerprints stay in the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional

from deps_fast.models import SubnetConfig


def fingerprint(**parts) -> str:
    """A short stable hash of the keyword values (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class EvaluationCache:
    """{(config, split): top-1 %} for one fingerprint, backed by an append-only JSON-lines file."""

    def __init__(self, path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.results: dict[tuple, dict] = {}
        self.reused = 0
        if self.path.is_file():
            self._read()

    @staticmethod
    def key(config: SubnetConfig, split: str) -> tuple:
        return config.to_json(), split

    def _read(self) -> None:
        with open(self.path) as f:
            lines = f.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                config = SubnetConfig.from_dict(record["config"])
                split, top1 = record["split"], float(record["top1"])
            except (ValueError, KeyError, TypeError):
                warnings.warn(f"{self.path}:{number}: skipping an unreadable evaluation record (cut short by a "
                              f"crash?)", RuntimeWarning, stacklevel=3)
                continue
            if record.get("fingerprint") == self.fingerprint:
                self.results[self.key(config, split)] = {**record, "top1": top1}

    def get(self, config: SubnetConfig, split: str) -> Optional[float]:
        found = self.results.get(self.key(config, split))
        return None if found is None else found["top1"]

    def put(self, config: SubnetConfig, split: str, top1: float, seconds: float) -> None:
        record = {"fingerprint": self.fingerprint, "config": config.to_dict(), "name": str(config), "split": split,
                  "top1": float(top1), "seconds": round(float(seconds), 4)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            # a line left unterminated by a crash must not swallow this one
            if f.tell() and not self._ends_with_newline():
                f.write("\n")
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.results[self.key(config, split)] = record

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def evaluate(self, configs: Iterable[SubnetConfig], split: str, measure: Callable[[SubnetConfig], float],
                 progress: bool = True, desc: Optional[str] = None) -> list[float]:
        """top-1 (%) of each config on `split`: from the cache, else `measure(config)` (then cached)."""
        from tqdm import tqdm

        configs = list(configs)
        todo = [c for c in dict.fromkeys(configs) if self.get(c, split) is None]
        self.reused += len(set(configs)) - len(todo)
        for config in tqdm(todo, desc=desc or f"evaluate ({split})", unit="subnet", disable=not progress):
            started = time.perf_counter()
            top1 = measure(config)
            self.put(config, split, top1, time.perf_counter() - started)
        return [self.get(c, split) for c in configs]
