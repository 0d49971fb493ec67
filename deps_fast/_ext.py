"""Loads the optional compiled extension deps_fast._C and remembers why it is missing, if it is."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def _load():
    try:
        from deps_fast import _C  # noqa: F401  (built by setup.py from csrc/)
    except ImportError as exc:  # not built, or built against another torch
        return None, f"the compiled extension deps_fast._C is not importable ({exc}); reinstall with " \
                     "`pip install --no-build-isolation -e .` after installing torch"
    return _C, None


def extension():
    """The deps_fast._C module, or None when it was not built."""
    return _load()[0]


def extension_error() -> str | None:
    """Why the extension is unavailable (None when it loaded)."""
    return _load()[1]


def has_cuda_kernels() -> bool:
    ext = extension()
    return ext is not None and bool(getattr(ext, "with_cuda", False))
