"""Checkpoints that never lose work: atomic writes, integrity checks, fallback to the previous good file.

File format of `ckpt-{step:09d}.pt`:
    8 bytes  magic b"DEPSCKP2" (b"DEPSCKP1" files, without the run id, are still read)
   32 bytes  sha256 of the payload
    8 bytes  payload length, little-endian unsigned
   16 bytes  run id (which training run wrote the file)
    payload  torch.save of the state dict

A checkpoint is written to a temporary file in the same directory, flushed and fsynced, then renamed onto its
final name (atomic on POSIX and Windows) and the directory fsynced, so a crash at any moment leaves either the
complete new file or none. On loading, a truncated or altered file fails the length or hash check; resuming
then falls back to the newest good checkpoint with a warning instead of dying or loading garbage.

Pruning deletes only files this run wrote (same run id) that verify: a file that fails its check, cannot be
read, or belongs to another run (or to nobody: a foreign file named like a checkpoint) is never deleted.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import struct
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from deps_fast import _validate
from deps_fast._util import atomic_write

MAGIC = b"DEPSCKP2"
HEADER = struct.Struct("<8s32sQ16s")  # magic, sha256(payload), len(payload), run id
MAGIC_V1, HEADER_V1 = b"DEPSCKP1", struct.Struct("<8s32sQ")  # the first format: no run id
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{9,})\.pt$")
TEMP_PREFIX, TEMP_SUFFIX = ".ckpt-", ".tmp"  # never matches CHECKPOINT_NAME, so never picked up

PathLike = Union[str, os.PathLike]


class SaveFailed(OSError):
    """A checkpoint could not be written (disk full, permissions); the message names the path and the space."""


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file failed its integrity check; `path` and `reason` say which and why."""

    def __init__(self, path, reason: str):
        super().__init__(f"corrupt checkpoint {path}: {reason}")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):  # keeps the two-argument constructor picklable (multiprocessing, pytest-xdist)
        return type(self), (self.path, self.reason)


def checkpoint_path(directory: PathLike, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:09d}.pt"


def list_checkpoints(directory: PathLike) -> list:
    """[(step, path)] of the files named like checkpoints in `directory`, newest (highest step) first.
    Temporary files are not listed. Nothing is opened, so corrupt files are listed too."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found, key=lambda item: item[0], reverse=True)


# ----------------------------------------------------------------------------------------------------- save

def save_checkpoint(directory: PathLike, state: dict, step: int, keep: int = 3, run_id: bytes = bytes(16)) -> Path:
    """Write `state` atomically as ckpt-{step:09d}.pt in `directory` (created if needed), stamped with the
    16-byte `run_id`, then delete all but the newest `keep` verified checkpoints of that run (files of other
    runs and files that fail their check are left alone). Returns the path written; SaveFailed (naming the
    path, the bytes needed and the bytes free) when the file cannot be written, the previous ones intact."""
    _validate.integer("step", step, minimum=0)
    _validate.integer("keep", keep, minimum=1)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    assert isinstance(run_id, bytes) and len(run_id) == 16, run_id
    directory = Path(directory)
    final = checkpoint_path(directory, step)
    payload = _serialize(state)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(final, (HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload), run_id), payload),
                     temp_prefix=TEMP_PREFIX, temp_suffix=TEMP_SUFFIX)
    except OSError as exc:
        try:
            free = f"{shutil.disk_usage(directory).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        raise SaveFailed(exc.errno, f"cannot write checkpoint {final}: {exc.strerror or exc} "
                                    f"({HEADER.size + len(payload):,} bytes needed, {free})") from exc
    _prune(directory, keep, just_written=final, run_id=run_id)
    return final


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _remove_quietly(path: Path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _prune(directory: Path, keep: int, just_written: Path, run_id: bytes):
    """Keep the newest `keep` verified checkpoints of run `run_id` (always the one just written, even if a run
    resumed from an older step left higher-numbered files) and delete its older ones. Files that fail their
    check or carry another run id are never touched; temporary files a crashed writer left are removed (the
    lock on the run directory means no other writer is active)."""
    kept = 0
    for _, path in list_checkpoints(directory):
        if path == just_written:
            kept += 1
            continue
        try:
            owner = _read_verified(path)[1]
        except CorruptCheckpoint:
            continue  # never delete what cannot be verified: it may be recoverable by hand
        if owner != run_id:
            continue  # another run's file, or not ours at all
        if kept < keep:
            kept += 1
        else:
            _remove_quietly(path)
    for temp in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        _remove_quietly(temp)


# ----------------------------------------------------------------------------------------------------- load

def _read_verified(path: Path) -> tuple:
    """(payload, run id or None for a first-format file) of `path`, or CorruptCheckpoint saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(path, f"cannot be read ({exc})") from exc
    magic = data[:8]
    if magic not in (MAGIC, MAGIC_V1):
        raise CorruptCheckpoint(path, f"magic is {magic!r}, expected {MAGIC!r} (not a deps_fast checkpoint)")
    header = HEADER if magic == MAGIC else HEADER_V1
    if len(data) < header.size:
        raise CorruptCheckpoint(path, f"{len(data)} bytes is shorter than the {header.size}-byte header")
    fields = header.unpack_from(data)
    digest, length, run_id = fields[1], fields[2], (fields[3] if magic == MAGIC else None)
    payload = memoryview(data)[header.size:]
    if len(payload) != length:
        raise CorruptCheckpoint(path, f"payload is {len(payload)} bytes, the header says {length} (truncated?)")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint(path, "sha256 of the payload does not match the header (bytes altered)")
    return payload, run_id


def verify(path: Path) -> Optional[str]:
    """None if `path` passes the integrity check, else the reason."""
    try:
        _read_verified(path)
    except CorruptCheckpoint as exc:
        return exc.reason
    return None


def load_checkpoint(path: PathLike, map_location="cpu") -> dict:
    """The state saved in `path`; CorruptCheckpoint if its magic, length or hash is wrong."""
    path = Path(path)
    payload, _ = _read_verified(path)
    # weights_only=False: the state holds optimizer/RNG objects (tuples, numpy arrays) that the restricted
    # unpickler refuses, and these files are our own, checked against their hash just above.
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a verified payload torch cannot read: not ours, or a torch mismatch
        raise CorruptCheckpoint(path, f"passes its check but torch cannot load it ({type(exc).__name__}: {exc})")


def newest_checkpoint(directory: PathLike, map_location="cpu") -> tuple:
    """(state, path, rejected) for the newest checkpoint in `directory` that loads; state and path are None
    when none does. `rejected` lists (path, reason) of every newer file that was skipped (each also warned)."""
    rejected = []
    for _, path in list_checkpoints(directory):
        try:
            return load_checkpoint(path, map_location=map_location), path, rejected
        except CorruptCheckpoint as exc:
            rejected.append((path, exc.reason))
            warnings.warn(f"skipping checkpoint {path}: {exc.reason}; falling back to the previous one",
                          RuntimeWarning, stacklevel=2)
    return None, None, rejected


def latest_checkpoint(directory: PathLike, map_location="cpu") -> Optional[tuple]:
    """(state, path) of the newest good checkpoint in `directory`, or None if there is none. A corrupt or
    truncated newer file is skipped with a warning naming it and why."""
    state, path, _ = newest_checkpoint(directory, map_location)
    return None if state is None else (state, path)


# ------------------------------------------------------------------------------------------------------- RNG

def capture_rng_state() -> dict:
    """Every global RNG a training step may draw from: python `random`, numpy's legacy global, torch CPU and,
    when CUDA is available, every CUDA device."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict):
    """Undo `capture_rng_state`: subsequent draws repeat those that followed the capture."""
    missing = [key for key in ("python", "numpy", "torch") if key not in state]
    if missing:
        raise ValueError(f"rng state lacks {missing}; expected a dict from capture_rng_state(), got keys "
                         f"{sorted(state)}")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    # .cpu(): a checkpoint loaded with map_location="cuda" moves these byte tensors, but the setters need CPU.
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available():
        _restore_cuda_rng([s.cpu() for s in cuda_states])


def _restore_cuda_rng(cuda_states: list):
    count = torch.cuda.device_count()
    if len(cuda_states) != count:
        warnings.warn(f"the rng state holds {len(cuda_states)} CUDA generators but {count} devices are visible; "
                      f"restoring the first {min(count, len(cuda_states))}", RuntimeWarning, stacklevel=3)
    for device, device_state in enumerate(cuda_states[:count]):
        torch.cuda.set_rng_state(device_state, device)


__all__ = ["CorruptCheckpoint", "SaveFailed", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "newest_checkpoint", "list_checkpoints",
           "checkpoint_path", "capture_rng_state", "restore_rng_state", "MAGIC"]
