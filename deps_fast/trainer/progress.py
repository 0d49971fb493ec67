"""What a run tells as it goes: a tqdm bar on a terminal (plain periodic lines otherwise: logs, CI, nohup),
and metrics.jsonl (plus TensorBoard scalars when tensorboard is installed)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class Progress:
    """The step counter a user watches: a tqdm bar on a terminal, a log line every `every` steps otherwise."""

    def __init__(self, total: int, start: int, *, enabled: bool = True, every: int = 10):
        self.total, self.step, self.enabled, self.every = total, start, enabled, max(1, every)
        self.bar = None
        self.t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, phase: str, beta: float, losses: dict, images_per_s: float) -> None:
        self.step += 1
        if not self.enabled:
            return
        loss = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
        if self.bar is not None:
            self.bar.set_postfix_str(f"{phase} β={beta:.3f} {loss} {images_per_s:.0f} img/s", refresh=False)
            self.bar.update(1)
        elif self.step % self.every == 0 or self.step == self.total:
            print(f"[deps_fast] step {self.step}/{self.total} {phase} β={beta:.3f} {loss} "
                  f"{images_per_s:.0f} img/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLog:
    """Appends one JSON record per line to <out>/metrics.jsonl; mirrors the numbers to TensorBoard event files
    in <out>/tensorboard when tensorboard is installed. Disabled (a no-op) on ranks other than 0."""

    def __init__(self, out: Path, enabled: bool = True):
        self.path, self.enabled, self.writer = Path(out) / "metrics.jsonl", enabled, None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(Path(out) / "tensorboard"))
            except ImportError:  # optional: metrics.jsonl always has everything
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            if record["type"] == "step":
                scalars = {"lr": record["lr"], "beta": record["beta"], "images_per_s": record["images_per_s"],
                           **{f"loss/{k}": v for k, v in record["losses"].items()}}
            else:
                scalars = {f"top1/{k}": v for k, v in record["top1"].items()}
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
