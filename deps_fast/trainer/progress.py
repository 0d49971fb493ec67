"""Progress: a tqdm bar on a terminal, plain periodic lines otherwise (logs, CI, nohup)."""
from __future__ import annotations

import sys
import time


class Progress:
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
