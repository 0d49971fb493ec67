"""Loads the optional compiled extension deps_fast._C and remembers why it is missing, if it is."""
from __future__ import annotations

_STATE: list = []  # [(module, error)] once loaded; a plain list, not lru_cache, so torch.compile traces it


def _load():
    if not _STATE:
        try:
            from deps_fast import _C  # built by setup.py from csrc/
            _STATE.append((_C, None))
        except ImportError as exc:  # not built, or built against another torch
            _STATE.append((None, f"the compiled extension deps_fast._C is not importable ({exc}); reinstall "
                                 "with `pip install --no-build-isolation -e .` after installing torch"))
    return _STATE[0]


def extension():
    """The deps_fast._C module, or None when it was not built."""
    return _load()[0]


def extension_error() -> str | None:
    """Why the extension is unavailable (None when it loaded)."""
    return _load()[1]


def has_cuda_kernels() -> bool:
    ext = extension()
    return ext is not None and bool(getattr(ext, "with_cuda", False))
