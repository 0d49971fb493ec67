"""Test setup. TRITON_INTERPRET must be set before any Triton kernel is defined, i.e. before deps_fast's
kernels are imported: without a GPU the Triton backend then runs (slowly) in the interpreter on CPU tensors."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def poison_uninitialized_memory():
    """Every torch.empty / at::empty (Python, C++ and the Triton wrappers) comes back filled with NaN, so an
    output element a kernel forgets to write shows up as NaN in the comparison."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture(autouse=True)
def _clean_backend_env(monkeypatch):
    monkeypatch.delenv("DEPS_FAST_BACKEND", raising=False)
