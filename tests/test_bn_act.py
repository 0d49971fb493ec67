"""elastic_batch_norm_act: every backend against deps_fast.reference, forward, running statistics and every
gradient, in training and eval, for every activation, dtype and layout.

Inputs are fresh random draws each run (seed printed on failure; DEPS_FAST_TEST_SEED reproduces one).
Outputs are poisoned with NaN by conftest, so unwritten elements fail. Tolerances come from the reference's
own error against a float64 truth on the same rounded inputs (helpers.assert_matches_truth).
"""
import importlib.util
import re

import pytest
import torch
import torch.nn as nn

from deps_fast import ops, reference
from deps_fast.ops import _backend
from deps_fast.ops import bn_act
from helpers import assert_matches_truth, require_backend, seed

FAST_BACKENDS = ("cpp", "triton", "cuda")
ACTS = ("none", "relu", "relu6", "hswish")
KINKS = {"none": (), "relu": (0.0,), "relu6": (0.0, 6.0), "hswish": (-3.0, 3.0)}


def _require(backend: str) -> str:
    """require_backend, plus: the Triton kernels of this op live in their own module (deps_fast.kernels.bn_act);
    on a checkout without that file the triton case is skipped, a module that exists but fails is a failure."""
    device = require_backend(backend)
    if backend == "triton" and importlib.util.find_spec("deps_fast.kernels.bn_act") is None:
        pytest.skip("deps_fast.kernels.bn_act is not in this checkout")
    reason = bn_act._input_reason(torch.empty(1, 1, 1, 1, device=device))(backend)
    if reason:
        pytest.fail(f"backend {backend!r} lacks the bn_act kernels: {reason}")
    return device


# (N, c, H, W, C_max, channels_last): c = 1, N = 1, 1x1 planes, odd sizes, c < C_max and c = C_max, wide c.
CASES = [
    (3, 1, 5, 7, 4, False),
    (2, 7, 9, 5, 9, True),
    (1, 12, 3, 3, 12, False),
    (5, 16, 1, 1, 24, True),
    (4, 9, 1, 1, 9, False),
    (2, 40, 6, 5, 48, True),
    (1, 3, 13, 11, 8, True),
    (2, 130, 4, 3, 136, False),
]


def _params(C, gen, device):
    """weight, bias, running mean, running var: float32 [C], varied so every channel is its own case."""
    w = (1.0 + 0.5 * torch.randn(C, generator=gen)).to(device)
    b = (0.5 * torch.randn(C, generator=gen)).to(device)
    rm = (0.3 * torch.randn(C, generator=gen)).to(device)
    rv = (0.5 + torch.rand(C, generator=gen)).to(device)
    return w, b, rm, rv


def _inputs(case, dtype, device, gen):
    N, c, H, W, C, cl = case
    fmt = torch.channels_last if cl else torch.contiguous_format
    # an offset mean per channel (the statistics must not cancel) and a spread that puts z across the kinks
    x = (2.0 * torch.randn(N, c, H, W, generator=gen) + 3.0 * torch.randn(1, c, 1, 1, generator=gen))
    x = x.to(dtype).to(device).contiguous(memory_format=fmt)
    g = torch.randn(N, c, H, W, generator=gen).to(dtype).to(device)
    return x, g


def _run(fn, x, w, b, rm, rv, g, training, act, **kw):
    """y, (grad x, grad w, grad b), and the running statistics after the call (on copies of rm, rv)."""
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    rm, rv = rm.clone(), rv.clone()
    y = fn(x, w, b, rm, rv, training=training, momentum=0.1, eps=1e-5, activation=act, **kw)
    grads = torch.autograd.grad(y, (x, w, b), g)
    return y, grads, rm, rv


def _mask_kinks(x, g, w, b, rm, rv, c, training, act):
    """Zero grad_y where the float64 pre-activation lies within 1e-3 of a kink of the activation: there the
    derivative is discontinuous and a last-bit difference in z may legitimately pick the other side."""
    if not KINKS[act]:
        return g
    x64 = x.double().cpu()
    if training:
        mean, var = x64.mean((0, 2, 3)), x64.var((0, 2, 3), unbiased=False)
    else:
        mean, var = rm[:c].double().cpu(), rv[:c].double().cpu()
    shape = (1, c, 1, 1)
    z = (x64 - mean.view(shape)) / (var.view(shape) + 1e-5).sqrt() * w[:c].double().cpu().view(shape) \
        + b[:c].double().cpu().view(shape)
    near = torch.zeros_like(z, dtype=torch.bool)
    for k in KINKS[act]:
        near |= (z - k).abs() < 1e-3
    return g.masked_fill(near.to(g.device), 0)


def _check_case(backend, case, dtype, act, training):
    device = _require(backend)
    case_seed = seed()
    gen = torch.Generator().manual_seed(case_seed)
    N, c, H, W, C, cl = case
    w, b, rm, rv = _params(C, gen, device)
    x, g = _inputs(case, dtype, device, gen)
    g = _mask_kinks(x, g, w, b, rm, rv, c, training, act)
    y, grads, rm_out, rv_out = _run(ops.elastic_batch_norm_act, x, w, b, rm, rv, g, training, act, backend=backend)
    y_ref, grads_ref, rm_ref, rv_ref = _run(reference.elastic_batch_norm_act, x, w, b, rm, rv, g, training, act)
    x64, w64, b64, rm64, rv64 = (t.double().cpu() for t in (x, w, b, rm, rv))
    y64, grads64, rm64_out, rv64_out = _run(reference.elastic_batch_norm_act, x64, w64, b64, rm64, rv64,
                                            g.double().cpu(), training, act)

    where = f"[backend={backend} act={act} training={training} seed={case_seed}]"
    assert y.dtype == dtype and y.device == x.device
    if cl and c > 1 and H * W > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), f"{where} output lost channels_last"
    assert_matches_truth(f"{where} output", y, y_ref, y64, dtype)
    for name, got, ref, truth in zip(("grad_x", "grad_weight", "grad_bias"), grads, grads_ref, grads64):
        assert got.dtype == ref.dtype and got.shape == ref.shape, f"{where} {name} {got.dtype} {tuple(got.shape)}"
        if name == "grad_x":
            assert_matches_truth(f"{where} {name}", got, ref, truth, dtype)
        else:
            _assert_sum_matches_truth(f"{where} {name}", got, ref, truth, dtype, N * H * W)
    for name, got, ref, truth, before in (("running_mean", rm_out, rm_ref, rm64_out, rm),
                                          ("running_var", rv_out, rv_ref, rv64_out, rv)):
        assert_matches_truth(f"{where} {name}", got, ref, truth, torch.float32)
        assert torch.equal(got[c:], before[c:]), f"{where} {name} changed beyond the prefix c={c}"
    for name, grad in (("grad_weight", grads[1]), ("grad_bias", grads[2])):
        assert (grad[c:] == 0).all(), f"{where} {name} nonzero beyond the prefix c={c}"


def _assert_sum_matches_truth(name, got, ref, truth, dtype, count):
    """Like assert_matches_truth for a per-channel sum over `count` values: the op's contract is float32
    accumulation, whose error grows like sqrt(count) ulps of the total (the reference may accumulate in float64,
    so its own error does not bound ours here)."""
    assert not torch.isnan(got).any(), f"{name}: NaN in output"
    got64, ref64, truth64 = got.double().cpu(), ref.double().cpu(), truth.double().cpu()
    scale = truth64.abs().max().item() + 1.0
    floor = max(4 * torch.finfo(dtype).eps, 4 * torch.finfo(torch.float32).eps * count ** 0.5) * scale
    ref_err, our_err = (ref64 - truth64).abs().max().item(), (got64 - truth64).abs().max().item()
    assert our_err <= 2 * ref_err + floor, (f"{name}: max error {our_err:.3g} vs truth; reference errs "
                                            f"{ref_err:.3g}; allowed {2 * ref_err + floor:.3g}")


def _case_id(case):
    N, c, H, W, C, cl = case
    return f"N{N}c{c}_{H}x{W}_C{C}_{'cl' if cl else 'nchw'}"


# Every case x activation x mode in float32; low precision on a rotating subset (each act, mode and layout).
PARAMS = [pytest.param(case, torch.float32, act, tr, id=f"{_case_id(case)}-f32-{act}-{'train' if tr else 'eval'}")
          for case in CASES for act in ACTS for tr in (True, False)]
for _i, (_dtype, _act, _tr) in enumerate([(d, a, t) for d in (torch.bfloat16, torch.float16) for a in ACTS
                                          for t in (True, False)]):
    _case = CASES[(_i * 3) % len(CASES)]
    PARAMS.append(pytest.param(_case, _dtype, _act, _tr,
                               id=f"{_case_id(_case)}-{str(_dtype)[6:]}-{_act}-{'train' if _tr else 'eval'}"))


@pytest.mark.parametrize("case, dtype, act, training", PARAMS)
def test_cpp_matches_reference(case, dtype, act, training):
    _check_case("cpp", case, dtype, act, training)


# The GPU backends on a subset (the Triton interpreter on CPU is slow): every act, mode, dtype and layout.
GPU_PARAMS = [p for i, p in enumerate(PARAMS) if i % 5 == 0 or p.values[1] != torch.float32]


@pytest.mark.parametrize("backend", ("triton", "cuda"))
@pytest.mark.parametrize("case, dtype, act, training", GPU_PARAMS)
def test_gpu_backends_match_reference(backend, case, dtype, act, training):
    _check_case(backend, case, dtype, act, training)


def test_reference_matches_nn_batchnorm2d_at_full_width():
    """The oracle itself: at c = C_max it is nn.BatchNorm2d (outputs and buffers) followed by the activation."""
    gen = torch.Generator().manual_seed(seed())
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(6, generator=gen))
        bn.bias.copy_(torch.randn(6, generator=gen))
    x = torch.randn(4, 6, 5, 3, generator=gen)
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    y = reference.elastic_batch_norm_act(x, bn.weight, bn.bias, rm, rv, training=True, activation="relu6")
    torch.testing.assert_close(y, torch.nn.functional.relu6(bn(x)))
    torch.testing.assert_close(rm, bn.running_mean)
    torch.testing.assert_close(rv, bn.running_var)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_running_stats_follow_nn_batchnorm2d_over_steps(backend):
    """Several training steps then eval, on a prefix c < C_max: buffers as a BatchNorm2d of width c would hold."""
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    C, c = 10, 7
    w, b, rm, rv = _params(C, gen, device)
    bn = nn.BatchNorm2d(c, momentum=0.3).to(device)
    with torch.no_grad():
        bn.weight.copy_(w[:c]), bn.bias.copy_(b[:c]), bn.running_mean.copy_(rm[:c]), bn.running_var.copy_(rv[:c])
    for step in range(3):
        x = (torch.randn(3, c, 4, 5, generator=gen) * (step + 1) + step).to(device)
        got = ops.elastic_batch_norm_act(x, w, b, rm, rv, training=True, momentum=0.3, backend=backend)
        torch.testing.assert_close(got, bn.train()(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm[:c], bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rv[:c], bn.running_var, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, c, 3, 3, generator=gen).to(device)
    got = ops.elastic_batch_norm_act(x, w, b, rm, rv, training=False, activation="hswish", backend=backend)
    torch.testing.assert_close(got, torch.nn.functional.hardswish(bn.eval()(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_momentum_zero_leaves_running_stats(backend):
    """BN recalibration runs the network with momentum 0: batch statistics normalise, buffers stay."""
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    w, b, rm, rv = _params(8, gen, device)
    before = rm.clone(), rv.clone()
    x = torch.randn(4, 5, 3, 3, generator=gen).to(device)
    y = ops.elastic_batch_norm_act(x, w, b, rm, rv, training=True, momentum=0.0, backend=backend)
    want = reference.elastic_batch_norm_act(x, w, b, before[0].clone(), before[1].clone(), training=True,
                                            momentum=0.0)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_statistics_do_not_cancel_with_large_mean(backend):
    """mean 1e3 x std: a naive E[x^2] - E[x]^2 in float32 would lose the variance entirely."""
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    x = (1000.0 + torch.randn(8, 3, 16, 16, generator=gen, dtype=torch.float64)).float().to(device)
    w, b = torch.ones(3, device=device), torch.zeros(3, device=device)
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    ops.elastic_batch_norm_act(x, w, b, rm, rv, training=True, momentum=1.0, backend=backend)
    x64 = x.double().cpu()
    torch.testing.assert_close(rm.cpu().double(), x64.mean((0, 2, 3)), rtol=1e-6, atol=0)
    torch.testing.assert_close(rv.cpu().double(), x64.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_reductions_are_deterministic_across_thread_counts(backend):
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    w, b, rm, rv = _params(40, gen, device)
    x = torch.randn(6, 33, 9, 7, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    g = torch.randn(6, 33, 9, 7, generator=gen).to(device)
    results = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results.append(_run(ops.elastic_batch_norm_act, x, w, b, rm, rv, g, True, "relu", backend=backend))
        finally:
            torch.set_num_threads(old)
    (y0, g0, m0, v0), (y1, g1, m1, v1) = results
    for a, bb in zip((y0, *g0, m0, v0), (y1, *g1, m1, v1)):
        assert torch.equal(a, bb), "result changed with the thread count"


# ---- custom op machinery -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(backend, channels_last):
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    w, b, rm, rv = _params(9, gen, device)
    x = torch.randn(2, 6, 5, 3, generator=gen).to(device).contiguous(memory_format=fmt)
    g = torch.randn(2, 6, 5, 3, generator=gen).to(device).contiguous(memory_format=fmt)
    for training in (True, False):
        torch.library.opcheck(bn_act.bn_act_fwd, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), rm, rv,
                                                  training, 1e-5, 3, backend))
        mean, invstd = x.detach().float().mean((0, 2, 3)), torch.rand(6, generator=gen).to(device) + 0.5
        torch.library.opcheck(bn_act.bn_act_bwd, (g, x.detach(), w.detach(), b.detach(), mean, invstd, training, 2,
                                                  backend, True))


@pytest.mark.parametrize("backend", ("cpp", "triton"))
def test_torch_compile_fullgraph(backend):
    device = _require(backend)
    gen = torch.Generator().manual_seed(seed())
    w, b, rm, rv = _params(8, gen, device)
    x = torch.randn(2, 5, 4, 3, generator=gen).to(device)

    def block(x, w, b, rm, rv):
        y = ops.elastic_batch_norm_act(x, w, b, rm, rv, training=True, activation="relu", backend=backend)
        return y.square().sum()

    rm2, rv2 = rm.clone(), rv.clone()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    args = [t.detach().requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(compiled(*args, rm, rv), args)
    args = [t.detach().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(block(*args, rm2, rv2), args)
    for a, bb in zip(got, want):
        torch.testing.assert_close(a, bb)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


def test_double_backward_is_refused_on_fused_backends():
    require_backend("cpp")
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    w, b = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    y = ops.elastic_batch_norm_act(x, w, b, torch.zeros(3), torch.ones(3), training=True, backend="cpp")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


def test_float64_runs_on_torch_backend_only():
    args = [torch.randn(2, 3, 4, 4, dtype=torch.float64)] + [torch.rand(3, dtype=torch.float64) + 0.5
                                                             for _ in range(4)]
    y = ops.elastic_batch_norm_act(*args, training=False)
    assert y.dtype == torch.float64
    with pytest.raises(ops.BackendUnavailable, match="float64"):
        ops.elastic_batch_norm_act(*args, training=False, backend="cpp")


def test_empty_batch_falls_back_to_reference():
    x = torch.randn(0, 3, 4, 4)
    y = ops.elastic_batch_norm_act(x, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), training=False)
    assert y.shape == x.shape


def test_missing_kernels_make_backend_unavailable(monkeypatch):
    """A backend whose bn_act functions are absent is unavailable for this op only: explicit request raises
    BackendUnavailable naming them, auto falls through to the next backend."""
    require_backend("cpp")

    from deps_fast import _ext
    real = _ext.extension()

    class NoBnAct:  # the extension as built before this op existed
        def __getattr__(self, name):
            if name.startswith("bn_act_"):
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(_ext, "extension", lambda: NoBnAct())
    args = [torch.randn(2, 3, 4, 4)] + [torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3)]
    with pytest.raises(ops.BackendUnavailable, match="bn_act_stats_cpu"):
        ops.elastic_batch_norm_act(*args, training=True, backend="cpp")
    y = ops.elastic_batch_norm_act(*args, training=True)  # auto: torch
    torch.testing.assert_close(y, reference.elastic_batch_norm_act(*args, training=True))


def test_auto_on_cpu_is_the_torch_composition_until_cpp_wins(monkeypatch):
    """bench/results/bn-act-cpu-*: the cpp kernels lose to eager at the demo's shapes, so auto runs torch on CPU;
    DEPS_FAST_BACKEND=cpp (an explicit choice) runs the kernels."""
    require_backend("cpp")
    calls = []
    real = bn_act.bn_act_fwd
    monkeypatch.setattr(bn_act, "bn_act_fwd", lambda *a: calls.append(a[-1]) or real(*a))
    args = [torch.randn(2, 3, 4, 4)] + [torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3)]
    ops.elastic_batch_norm_act(*args, training=True)
    assert calls == []
    monkeypatch.setenv("DEPS_FAST_BACKEND", "cpp")
    ops.elastic_batch_norm_act(*args, training=True)
    assert calls == ["cpp"]


# ---- bad input ---------------------------------------------------------------------------------------------
def _bad(**overrides):
    args = dict(x=torch.randn(2, 4, 3, 3), weight=torch.ones(6), bias=torch.zeros(6), running_mean=torch.zeros(6),
                running_var=torch.ones(6), training=True, momentum=0.1, eps=1e-5, activation="relu")
    args.update(overrides)
    return args


BAD_INPUTS = [
    (_bad(x=torch.randn(4, 3, 3)), ValueError, r"x must be 4-D \[N, c, H, W\], got shape \(4, 3, 3\)"),
    (_bad(x=[1.0]), TypeError, r"x must be a torch.Tensor, got list"),
    (_bad(x=torch.randn(2, 4, 3, 3).int()), TypeError, r"x.dtype must be one of float32, bfloat16, float16"),
    (_bad(weight=torch.ones(6, 1)), ValueError, r"weight must be 1-D \[C_max\], got shape \(6, 1\)"),
    (_bad(bias=torch.zeros(5)), ValueError, r"bias has 5 entries but weight has 6"),
    (_bad(running_var=torch.ones(6).half()), TypeError, r"running_var.dtype must be torch.float32.*got torch.float16"),
    (_bad(running_mean=None), TypeError, r"running_mean must be a torch.Tensor"),
    (_bad(x=torch.randn(2, 7, 3, 3)), ValueError, r"c=7 channels; allowed 1 <= c <= C_max=6"),
    (_bad(training=1), TypeError, r"training must be True or False, got 1"),
    (_bad(momentum=None), ValueError, r"momentum=None.*not supported"),
    (_bad(momentum=1.5), ValueError, r"momentum must be a number in \[0, 1\], got 1.5"),
    (_bad(momentum=-0.1), ValueError, r"momentum must be a number in \[0, 1\], got -0.1"),
    (_bad(eps=0.0), ValueError, r"eps must be a finite number > 0, got 0.0"),
    (_bad(eps=float("nan")), ValueError, r"eps must be a finite number > 0"),
    (_bad(activation="gelu"), ValueError, r"activation must be one of \('none', 'relu', 'relu6', 'hswish'\), "
                                          r"got 'gelu'"),
    (_bad(x=torch.randn(1, 4, 1, 1)), ValueError, r"training needs more than one value per channel"),
]


@pytest.mark.parametrize("args, exc, message", BAD_INPUTS, ids=[re.sub(r"\W+", "_", m)[:40] for _, _, m in BAD_INPUTS])
@pytest.mark.parametrize("backend", ("auto", "torch"))
def test_bad_input_raises_clear_error(args, exc, message, backend):
    with pytest.raises(exc, match=message):
        ops.elastic_batch_norm_act(**args, backend=backend)


def test_bad_backend_and_unavailable_backend_say_why():
    args = _bad()
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.elastic_batch_norm_act(**args, backend="fastest")
    with pytest.raises(ops.BackendUnavailable, match="cuda.*needs CUDA tensors"):
        ops.elastic_batch_norm_act(**args, backend="cuda")


def test_eval_with_one_value_per_channel_is_allowed():
    y = ops.elastic_batch_norm_act(**_bad(x=torch.randn(1, 4, 1, 1), training=False))
    assert y.shape == (1, 4, 1, 1)


def test_h_swish_alias():
    args = _bad(training=False)
    a = ops.elastic_batch_norm_act(**{**args, "activation": "h_swish"})
    b = ops.elastic_batch_norm_act(**{**args, "activation": "hswish"})
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device mismatch needs a CUDA device")
def test_device_mismatch_raises():
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        ops.elastic_batch_norm_act(**_bad(x=torch.randn(2, 4, 3, 3, device="cuda")))
