"""distillation_loss: every backend against deps_fast.reference, value and gradient.

Fresh random logits each run (seed in failure messages; DEPS_FAST_TEST_SEED reproduces); outputs poisoned
by conftest; low-precision tolerances from the reference's own error against a float64 truth.
"""
import itertools
import re

import pytest
import torch

from deps_fast import ops, reference
from deps_fast.ops import distill as dl
from helpers import seed, assert_matches_truth, require_backend

FAST_BACKENDS = ("cpp", "triton", "cuda")
VS = (2, 10, 100, 1000, 4099, 50000)
SETTINGS = [(1.0, 0.0, "mean"), (4.0, 0.1, "none"), (1.0, 0.1, "sum"), (4.0, 0.0, "mean")]


def _batch(V: int, i: int) -> int:
    # B = 256 in a few cases only: the Triton interpreter pays ~25 ms per row
    if V in (10, 1000) and i % 6 == 2:
        return 256
    return (1, 3)[i % 2]


PARAMS = []
for V, (i, (mode, setting)) in itertools.product(VS, enumerate(itertools.product(("soft", "hard", "both"), SETTINGS))):
    if i % 2 == 0 or V in (2, 1000):  # every (mode, T, eps, reduction) for two V; half of them for the others
        T, eps, red = setting
        PARAMS.append(pytest.param(V, _batch(V, i), mode, T, eps, red, torch.float32,
                                   id=f"V{V}-B{_batch(V, i)}-{mode}-T{T:g}-eps{eps:g}-{red}-f32"))
for dtype, V, mode in itertools.product((torch.bfloat16, torch.float16), (10, 1000, 4099), ("soft", "both")):
    PARAMS.append(pytest.param(V, 3, mode, 4.0 if V == 1000 else 1.0, 0.1, "mean", dtype,
                               id=f"V{V}-B3-{mode}-{str(dtype)[6:]}"))


def _inputs(B, V, mode, dtype, device, gen, scale=3.0):
    student = (scale * torch.randn(B, V, generator=gen)).to(dtype).to(device)
    teacher = (scale * torch.randn(B, V, generator=gen)).to(dtype).to(device) if mode != "hard" else None
    target = torch.randint(0, V, (B,), generator=gen).to(device) if mode != "soft" else None
    return student, teacher, target


def _value_and_grad(fn, student, teacher, target, upstream, **kw):
    s = student.detach().clone().requires_grad_()
    loss = fn(s, teacher, target, **kw)
    (grad,) = torch.autograd.grad(loss, s, upstream if loss.dim() else None)
    return loss.detach(), grad


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("V, B, mode, T, eps, reduction, dtype", PARAMS)
def test_matches_reference(backend, V, B, mode, T, eps, reduction, dtype):
    device = require_backend(backend)
    case_seed = seed()
    gen = torch.Generator().manual_seed(case_seed)
    student, teacher, target = _inputs(B, V, mode, dtype, device, gen)
    upstream = torch.randn(B, generator=gen).to(device) if reduction == "none" else None
    kw = dict(temperature=T, soft_weight=0.7, hard_weight=1.3, label_smoothing=eps, reduction=reduction)
    loss, grad = _value_and_grad(lambda *a, **k: ops.distillation_loss(*a, **k, backend=backend),
                                 student, teacher, target, upstream, **kw)
    loss_ref, grad_ref = _value_and_grad(reference.distillation_loss, student, teacher, target, upstream, **kw)
    to64 = lambda t: None if t is None else t.double().cpu()  # noqa: E731
    loss64, grad64 = _value_and_grad(reference.distillation_loss, to64(student), to64(teacher),
                                     None if target is None else target.cpu(), to64(upstream), **kw)
    where = f"[backend={backend} seed={case_seed}]"
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_matches_truth(f"{where} loss", loss, loss_ref, loss64, torch.float32)
    assert_matches_truth(f"{where} grad", grad, grad_ref, grad64, dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_extreme_logits_and_one_hot_teacher(backend):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    B, V = 4, 257
    student = torch.randint(-1, 2, (B, V), generator=gen).float().mul(1e4).to(device)
    hot = torch.randint(0, V, (B,), generator=gen)
    teacher = torch.full((B, V), -1e4).scatter(1, hot[:, None], 1e4).to(device)
    target = hot.to(device)
    for kw in (dict(temperature=1.0), dict(temperature=4.0, label_smoothing=0.1)):
        loss, grad = _value_and_grad(lambda *a, **k: ops.distillation_loss(*a, **k, backend=backend),
                                     student, teacher, target, None, **kw)
        loss_ref, grad_ref = _value_and_grad(reference.distillation_loss, student, teacher, target, None, **kw)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_propagates(backend):
    device = require_backend(backend)
    student = torch.randn(3, 11, device=device)
    student[1, 4] = float("nan")
    loss = ops.distillation_loss(student, torch.randn(3, 11, device=device), reduction="none", backend=backend)
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("backend", FAST_BACKENDS + ("torch",))
def test_teacher_is_a_constant(backend):
    device = require_backend(backend) if backend != "torch" else "cpu"
    student = torch.randn(3, 7, device=device, requires_grad=True)
    teacher = torch.randn(3, 7, device=device, requires_grad=True)
    ops.distillation_loss(student, teacher, backend=backend).backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck(backend, reduction):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    s = torch.randn(4, 33, generator=gen).to(device).requires_grad_()
    t = torch.randn(4, 33, generator=gen).to(device)
    y = torch.randint(0, 33, (4,), generator=gen).to(device)
    torch.library.opcheck(dl.distill_fwd, (s, t, y, 2.0, 0.5, 1.0, 0.1, reduction, backend))
    torch.library.opcheck(dl.distill_fwd, (s, None, y, 1.0, 1.0, 1.0, 0.0, reduction, backend))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_torch_compile_fullgraph(backend):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    s = torch.randn(5, 40, generator=gen).to(device).requires_grad_()
    t = torch.randn(5, 40, generator=gen).to(device)
    y = torch.randint(0, 40, (5,), generator=gen).to(device)

    def loss_fn(s, t):
        return ops.distillation_loss(s * 2, t, label_smoothing=0.1, backend=backend)

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(s, t), s)[0]
    want = torch.autograd.grad(loss_fn(s, t), s)[0]
    torch.testing.assert_close(got, want)
    del y


def test_float64_and_empty_batch_use_the_reference():
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ops.distillation_loss(s, s.detach() * 2), reference.distillation_loss(s, s.detach() * 2))
    with pytest.raises(ops.BackendUnavailable, match="float64"):
        ops.distillation_loss(s, s.detach(), backend="cpp")
    empty = torch.randn(0, 5)
    assert ops.distillation_loss(empty, empty, reduction="sum").item() == 0.0


def _args(**overrides):
    args = dict(student=torch.randn(3, 5), teacher=torch.randn(3, 5), target=torch.tensor([0, 4, 2]))
    args.update(overrides)
    return args


BAD_INPUTS = [
    (_args(student=torch.randn(3, 5, 2)), ValueError, r"student must be logits \[B, V\] with V >= 2, got shape \(3, 5, 2\)"),
    (_args(student=torch.randn(3, 1), teacher=None, target=None), ValueError, r"V >= 2, got shape \(3, 1\)"),
    (_args(student=[[1.0]]), TypeError, r"student must be a torch.Tensor"),
    (_args(student=torch.randn(3, 5).int()), TypeError, r"student.dtype must be float32, bfloat16 or float16"),
    (_args(teacher=None, target=None), ValueError, r"give a teacher \(soft term\), a target \(hard term\) or both"),
    (_args(teacher=torch.randn(3, 6)), ValueError, r"teacher shape \(3, 6\) must equal student shape \(3, 5\)"),
    (_args(teacher=torch.randn(3, 5).half()), TypeError, r"teacher.dtype torch.float16 must equal student.dtype"),
    (_args(target=torch.tensor([0, 5, 1])), ValueError, r"target values must be in \[0, V=5\), got 5"),
    (_args(target=torch.tensor([0, -1, 1])), ValueError, r"target values must be in \[0, V=5\), got -1"),
    (_args(target=torch.tensor([0, 1, 1]).int()), TypeError, r"target.dtype must be torch.int64, got torch.int32"),
    (_args(target=torch.tensor([0, 1])), ValueError, r"target must have shape \(3,\), got \(2,\)"),
    (dict(_args(), temperature=0.0), ValueError, r"temperature must be a finite number >= 1e-4, got 0.0"),
    (dict(_args(), temperature=float("inf")), ValueError, r"temperature must be a finite number >= 1e-4, got inf"),
    (dict(_args(), label_smoothing=1.5), ValueError, r"label_smoothing must be a number in \[0, 1\], got 1.5"),
    (dict(_args(), soft_weight="1"), ValueError, r"soft_weight must be a finite number, got '1'"),
    (dict(_args(), reduction="avg"), ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    (dict(_args(), backend="gpu"), ValueError, r"backend must be one of"),
]


@pytest.mark.parametrize("args, exc, message", BAD_INPUTS, ids=[re.sub(r"\W+", "_", m)[:40] for _, _, m in BAD_INPUTS])
def test_bad_input_raises_clear_error(args, exc, message):
    with pytest.raises(exc, match=message):
        ops.distillation_loss(**args)


# The interpreter normally takes the whole row in one block; a small BLOCK_V runs the online-softmax merge
# across blocks (rescaling the running sums) and a partial last block, as on a GPU for V > 4096.
@pytest.mark.parametrize("V, block, mode, T", [(1000, 128, "both", 4.0), (300, 64, "soft", 1.0), (77, 16, "hard", 1.0)])
def test_triton_multi_block(monkeypatch, V, block, mode, T):
    from deps_fast.kernels import distill as tk
    monkeypatch.setattr(tk, "BLOCK_V_OVERRIDE", block)
    for dtype in (torch.float32, torch.bfloat16):
        test_matches_reference("triton", V, 3, mode, T, 0.1, "mean", dtype)


# GPU block sizes: V over 4096 runs several BLOCK_V blocks per row; rows as many as a real batch.
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("V, dtype", [(32000, torch.bfloat16), (10000, torch.float16), (4097, torch.float32)])
def test_gpu_shaped_cases(backend, V, dtype):
    if not torch.cuda.is_available():
        pytest.skip("GPU-sized shapes: needs a CUDA device")
    test_matches_reference(backend, V, 256, "both", 4.0, 0.1, "mean", dtype)
