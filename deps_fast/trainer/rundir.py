"""The run directory: which folder a run writes to, an exclusive lock on it, and the rule that two runs never mix.

- The default folder is runs/<schedule>-<space>-<data>; when it already holds a run, a fresh run takes the next
  free numbered folder (…-2, …-3), so running the demo twice just works, and `--resume` without `--out` picks
  the newest of them.
- An explicit `--out` that already holds a run is refused unless `--resume` (continue it) or `--overwrite`
  (delete that run's files first) is given.
- One trainer at a time: an exclusive `flock` on <out>/.lock, held until the process exits (a crashed process
  releases it), so a second trainer on the same folder stops with the process id and host of the first.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Optional

from deps_fast.trainer.checkpoint import TEMP_PREFIX, TEMP_SUFFIX, list_checkpoints, verify

# What a run writes into its folder; --overwrite removes exactly these.
RUN_FILES = ("checkpoints", "metrics.jsonl", "config.json", "report.json", "report.md", "pareto.png", "tensorboard")


def holds_a_run(folder: Path) -> list:
    """The run files present in `folder` (empty: nothing of a run there)."""
    return [name for name in RUN_FILES if (folder / name).exists()
            and (name != "checkpoints" or list_checkpoints(folder / name))]


def default_folder(base: Path, resume: bool) -> Path:
    """`base` or the numbered folder next to it: for a fresh run the first one holding no run, for --resume
    the newest (highest-numbered) one that holds a run."""
    candidates = [base] + sorted((p for p in base.parent.glob(f"{base.name}-*") if p.name[len(base.name) + 1:].isdigit()),
                                 key=lambda p: int(p.name[len(base.name) + 1:]))
    if resume:
        held = [p for p in candidates if holds_a_run(p)]
        return held[-1] if held else base
    index = 1
    folder = base
    while holds_a_run(folder):
        index += 1
        folder = base.parent / f"{base.name}-{index}"
    return folder


class RunLock:
    """An exclusive lock on a run folder for this process's lifetime (see the module docstring)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ValueError(f"--out {str(self.folder)!r} cannot be written: {exc.strerror or exc}; choose "
                             f"another --out") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 200).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise ValueError(f"--out {str(self.folder)!r} is in use by {holder} (a trainer is writing there); wait "
                             f"for it to finish or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"process {os.getpid()} on {socket.gethostname()}".encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def prepare(folder: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a fresh run into a folder holding another (the caller holds the lock); --overwrite
    deletes that run's files first."""
    present = holds_a_run(folder)
    if resume or not present:
        return
    if not overwrite:
        raise ValueError(f"--out {str(folder)!r} already holds a run ({', '.join(present)}); continue it with "
                         f"--resume, choose another --out, or pass --overwrite to replace it")
    for name in present:
        path = folder / name
        if name == "checkpoints":
            _remove_checkpoints(path)
        else:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _remove_checkpoints(directory: Path) -> None:
    """Delete the deps_fast checkpoints (and temporary files) of `directory`; anything that is not one of ours
    (a foreign file named like a checkpoint, a damaged file) stays, with a warning."""
    kept = []
    for _, path in list_checkpoints(directory):
        if verify(path) is None:
            path.unlink()
        else:
            kept.append(path.name)
    for temp in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        temp.unlink()
    if kept:
        warnings.warn(f"--overwrite kept {kept} in {directory}: not verifiable deps_fast checkpoints (move them away "
                      f"if they are not needed)", RuntimeWarning)


def resolve_folder(out: Optional[str], base: Path, resume: bool) -> Path:
    return Path(out) if out else default_folder(base, resume)
