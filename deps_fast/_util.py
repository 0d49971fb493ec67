"""Small helpers that several layers need: atomic file writes, seeded generators, the device's name and
whether Triton runs in its interpreter. Imports nothing of deps_fast, so any module may use it."""
from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from pathlib import Path
from typing import Iterable, Union

import torch


def triton_interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET=1 set before the kernels were defined)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def seeded_generator(*parts) -> torch.Generator:
    """A CPU generator whose seed hashes `parts`: independent streams for every (purpose, seed, epoch, batch)
    without the collisions of seed arithmetic such as seed * 1000 + epoch; the same numbers on every machine."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def prefers_channels_last(device: Union[str, torch.device]) -> bool:
    """Whether training and evaluation should run channels_last on `device`: on CUDA (cuDNN's fast convolutions
    want it) and on CPU too, where oneDNN's 1x1 and depthwise convolutions are faster on NHWC and the cpp
    depthwise kernels take it natively: a DεpS shrinking step of the demo's model ran 1.33x faster with the
    cpp backend and 2.8x with the torch backend (bench/bench_step.py --profile --channels-last both)."""
    return torch.device(device).type in ("cuda", "cpu")


def device_name(device: Union[str, torch.device]) -> str:
    """A human name of `device`: the GPU's name, or the CPU model with the thread count torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "cpu"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def atomic_write(final: Union[str, os.PathLike], chunks: Union[bytes, Iterable[bytes]], *,
                 temp_prefix: str | None = None, temp_suffix: str = ".tmp", mode: int = 0o666) -> Path:
    """Write `chunks` to `final` so that a crash at any moment leaves the old file or the complete new one:
    a temporary file in the same directory, flushed and fsynced, renamed onto `final`, then the directory
    fsynced (the rename itself durable). The file gets `mode` minus the umask, as `open` would give it."""
    final = Path(final)
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = (chunks,)
    handle, temp_name = tempfile.mkstemp(prefix=temp_prefix or f".{final.name}-", suffix=temp_suffix,
                                         dir=final.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, mode & ~umask)  # mkstemp creates 0600; users expect their umask's mode
        with os.fdopen(handle, "wb") as temp:
            for chunk in chunks:
                temp.write(chunk)
            temp.flush()
            os.fsync(temp.fileno())  # the bytes are on disk before the name points at them
        os.replace(temp_name, final)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(final.parent)
    return final


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; its rename is durable enough there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
