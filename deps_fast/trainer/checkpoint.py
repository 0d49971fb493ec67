"""Checkpoints that never lose work: atomic writes, integrity checks, fallback to the previous good file.

File format of `ckpt-{step:09d}.pt`:
    8 bytes  magic b"DEPSCKP1"
   32 bytes  sha256 of the payload
    8 bytes  payload length, little-endian unsigned
    payload  torch.save of the state dict

A checkpoint is written to a temporary file in the same directory, flushed and fsynced, then renamed onto its
final name (atomic on POSIX and Windows) and the directory fsynced, so a crash at any moment leaves either the
complete new file or none. On loading, a truncated or altered file fails the length or hash check; resuming
then falls back to the newest good checkpoint with a warning instead of dying or loading garbage.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import struct
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from deps_fast import _validate
from deps_fast._util import atomic_write

MAGIC = b"DEPSCKP1"
HEADER = struct.Struct("<8s32sQ")  # magic, sha256(payload), len(payload)
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{9,})\.pt$")
TEMP_PREFIX, TEMP_SUFFIX = ".ckpt-", ".tmp"  # never matches CHECKPOINT_NAME, so never picked up

PathLike = Union[str, os.PathLike]


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

def save_checkpoint(directory: PathLike, state: dict, step: int, keep: int = 3) -> Path:
    """Write `state` atomically as ckpt-{step:09d}.pt in `directory` (created if needed), then delete all
    but the newest `keep` valid checkpoints. Returns the path written."""
    _validate.integer("step", step, minimum=0)
    _validate.integer("keep", keep, minimum=1)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = _serialize(state)
    final = checkpoint_path(directory, step)
    atomic_write(final, (HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload)), payload),
                 temp_prefix=TEMP_PREFIX, temp_suffix=TEMP_SUFFIX)
    _prune(directory, keep, just_written=final)
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


def _prune(directory: Path, keep: int, just_written: Path):
    """Keep the newest `keep` valid checkpoints (and always the one just written, even if a run resumed
    from an older step left higher-numbered files); delete the rest, corrupt ones included, and any
    temporary file a crashed writer left behind."""
    kept = 0
    for _, path in list_checkpoints(directory):
        if path == just_written:
            kept += 1
        elif kept < keep and _verify(path) is None:
            kept += 1
        else:
            _remove_quietly(path)
    for temp in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        _remove_quietly(temp)


# ----------------------------------------------------------------------------------------------------- load

def _read_verified(path: Path) -> bytes:
    """The payload of `path`, or CorruptCheckpoint saying what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(path, f"cannot be read ({exc})") from exc
    if len(data) < HEADER.size:
        raise CorruptCheckpoint(path, f"{len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, digest, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpoint(path, f"magic is {magic!r}, expected {MAGIC!r} (not a deps_fast checkpoint)")
    payload = memoryview(data)[HEADER.size:]
    if len(payload) != length:
        raise CorruptCheckpoint(path, f"payload is {len(payload)} bytes, the header says {length} (truncated?)")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint(path, "sha256 of the payload does not match the header (bytes altered)")
    return payload


def _verify(path: Path) -> Optional[str]:
    """None if `path` passes the integrity check, else the reason."""
    try:
        _read_verified(path)
    except CorruptCheckpoint as exc:
        return exc.reason
    return None


def load_checkpoint(path: PathLike, map_location="cpu") -> dict:
    """The state saved in `path`; CorruptCheckpoint if its magic, length or hash is wrong."""
    path = Path(path)
    payload = _read_verified(path)
    # weights_only=False: the state holds optimizer/RNG objects (tuples, numpy arrays) that the restricted
    # unpickler refuses, and these files are our own, checked against their hash just above.
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)


def latest_checkpoint(directory: PathLike, map_location="cpu") -> Optional[tuple]:
    """(state, path) of the newest good checkpoint in `directory`, or None if there is none. A corrupt or
    truncated newer file is skipped with a warning naming it and why."""
    for _, path in list_checkpoints(directory):
        try:
            return load_checkpoint(path, map_location=map_location), path
        except CorruptCheckpoint as exc:
            warnings.warn(f"skipping checkpoint {path}: {exc.reason}; falling back to the previous one",
                          RuntimeWarning, stacklevel=2)
    return None


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


__all__ = ["CorruptCheckpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints",
           "checkpoint_path", "capture_rng_state", "restore_rng_state", "MAGIC"]
