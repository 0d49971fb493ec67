"""elastic_depthwise_conv2d: every backend against deps_fast.reference, forward and every gradient.

Inputs are fresh random draws each run (seed printed on failure; DEPS_FAST_TEST_SEED reproduces one).
Outputs are poisoned with NaN by conftest, so unwritten elements fail. Low-precision tolerances come from
the reference's own error against a float64 truth on the same rounded inputs.
"""
import re

import pytest
import torch

from deps_fast import ops, reference
from deps_fast.ops import _backend
from deps_fast.ops import depthwise as dw
from helpers import seed, assert_matches_truth, require_backend

FAST_BACKENDS = ("cpp", "triton", "cuda")


def _transforms(K: int, dtype, device, gen):
    """OFA-style matrices near identity (so the transformed kernel really differs from the crop)."""
    out = {}
    for t in range(K - 2, 0, -2):
        eye = torch.eye(t * t, dtype=torch.float64)
        out[t] = (eye + 0.2 * torch.randn(t * t, t * t, generator=gen, dtype=torch.float64)).to(dtype).to(device)
    return out


# (N, c, H, W, k, stride, channels_last, C_max, K, with_transforms): every k, c in {1, 7, 48, 120} and odd
# ones, both strides, odd/even/1-pixel images, N = 1, both layouts, K = k and K > k, with/without transforms.
CASES = [
    (1, 1, 7, 9, 3, 1, False, 4, 7, False),
    (2, 7, 13, 11, 5, 2, True, 9, 7, False),
    (2, 48, 9, 7, 7, 1, False, 64, 7, False),
    (1, 120, 5, 7, 7, 2, True, 120, 7, False),
    (2, 7, 11, 13, 3, 2, False, 7, 3, False),
    (1, 17, 6, 5, 5, 1, True, 24, 7, True),
    (2, 7, 9, 9, 3, 2, False, 8, 7, True),
    (2, 5, 1, 1, 7, 1, False, 8, 7, False),
    (1, 3, 2, 5, 3, 2, True, 5, 5, False),
    (1, 48, 7, 8, 5, 1, False, 48, 5, False),
    (3, 33, 4, 3, 7, 2, True, 40, 7, True),
    # NCHW planes of <= 64 pixels (cpp: 8 channels per task, channel-innermost tiles): k = 3/5/7, both strides,
    # c not a multiple of 8, the 64-pixel boundary, a window larger than the plane, K > k with transforms
    (2, 13, 7, 7, 5, 2, False, 16, 7, False),
    (3, 9, 4, 4, 7, 2, False, 9, 7, True),
    (2, 20, 8, 8, 3, 1, False, 24, 5, False),
    (1, 8, 3, 5, 7, 1, False, 8, 7, False),
    (2, 17, 5, 6, 5, 1, False, 17, 5, False),
    (2, 11, 6, 5, 3, 2, False, 12, 3, False),
]
LOWP_CASES = [CASES[i] for i in (1, 2, 5, 6, 9, 11, 12, 15)]


def _case_id(case):
    N, c, H, W, k, s, cl, C, K, tr = case
    return f"N{N}c{c}_{H}x{W}_k{k}s{s}_{'cl' if cl else 'nchw'}_C{C}K{K}{'_tr' if tr else ''}"


PARAMS = [pytest.param(case, torch.float32, False, id=_case_id(case) + "-f32") for case in CASES]
for _dtype in (torch.bfloat16, torch.float16):
    for _i, _case in enumerate(LOWP_CASES):
        # alternate the weight between a float32 master weight and the input's own dtype
        _same = bool(_i % 2)
        PARAMS.append(pytest.param(_case, _dtype, _same, id=f"{_case_id(_case)}-{str(_dtype)[6:]}-w{'same' if _same else 'f32'}"))


def _run(fn, x, w, k, s, transforms, g):
    inputs = [x, w] + ([transforms[t] for t in sorted(transforms)] if transforms else [])
    y = fn(x, w, k, s, transforms)
    grads = torch.autograd.grad(y, inputs, g, allow_unused=True, materialize_grads=True)
    return y, grads


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("case, dtype, weight_same_dtype", PARAMS)
def test_matches_reference(backend, case, dtype, weight_same_dtype):
    _check_against_reference(backend, case, dtype, weight_same_dtype)


def _check_against_reference(backend, case, dtype, weight_same_dtype):
    """Forward, grad_x, grad_weight and grad of the transforms of one case vs the reference and float64 truth."""
    device = require_backend(backend)
    case_seed = seed()
    gen = torch.Generator().manual_seed(case_seed)
    N, c, H, W, k, s, cl, C, K, with_tr = case
    fmt = torch.channels_last if cl else torch.contiguous_format
    wdtype = dtype if weight_same_dtype else torch.float32
    x = torch.randn(N, c, H, W, generator=gen).to(dtype).to(device).contiguous(memory_format=fmt).requires_grad_()
    w = (0.3 * torch.randn(C, 1, K, K, generator=gen)).to(wdtype).to(device).requires_grad_()
    tr = _transforms(K, wdtype, device, gen) if with_tr else None
    if tr:
        for m in tr.values():
            m.requires_grad_()
    OH, OW = (H - 1) // s + 1, (W - 1) // s + 1
    g = torch.randn(N, c, OH, OW, generator=gen).to(dtype).to(device)

    def ours(*a):
        return ops.elastic_depthwise_conv2d(*a, backend=backend)

    y, grads = _run(ours, x, w, k, s, tr, g)
    y_ref, grads_ref = _run(reference.elastic_depthwise_conv2d, x, w, k, s, tr, g)
    x64 = x.detach().double().cpu().requires_grad_()
    w64 = w.detach().double().cpu().requires_grad_()
    tr64 = {t: m.detach().double().cpu().requires_grad_() for t, m in tr.items()} if tr else None
    y64, grads64 = _run(reference.elastic_depthwise_conv2d, x64, w64, k, s, tr64, g.double().cpu())

    where = f"[backend={backend} seed={case_seed}]"
    assert y.dtype == dtype and y.device == x.device
    if cl and c > 1 and OH * OW > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), f"{where} output lost channels_last"
    assert_matches_truth(f"{where} output", y, y_ref, y64, dtype)
    names = ["grad_x", "grad_weight"] + [f"grad_transform[{t}]" for t in sorted(tr or {})]
    for name, got, ref, truth in zip(names, grads, grads_ref, grads64):
        assert got.dtype == ref.dtype, f"{where} {name} dtype {got.dtype} != {ref.dtype}"
        assert_matches_truth(f"{where} {name}", got, ref, truth, ref.dtype)
    if not tr:  # the gradient lands only in the used slice and window
        o = (K - k) // 2
        mask = torch.ones(C, 1, K, K, dtype=torch.bool)
        mask[:c, :, o:o + k, o:o + k] = False
        assert (grads[1].cpu()[mask] == 0).all(), f"{where} weight gradient written outside the used window"


# The C++ backend's own kernels: planes over 64 pixels run the NCHW kernels (smaller ones the channels_last
# ones), each kernel size has its own specialization (k = 1 the generic one), stride 1 and 2 differ.
CPP_CASES = [
    (2, 5, 9, 11, k, s, False, 8, 7, False) for k in (1, 3, 5, 7) for s in (1, 2)
] + [
    (1, 6, 12, 12, 7, 1, False, 6, 7, True),   # NCHW with transforms
    (2, 4, 7, 8, 1, 1, False, 4, 7, False),    # <= 64 px, k = 1: through the channels_last kernels
    (2, 3, 5, 6, 5, 2, False, 5, 5, False),    # <= 64 px, stride 2
    (2, 16, 9, 10, 3, 1, True, 16, 7, False),  # even channels, channels_last
    (1, 8, 12, 9, 5, 2, True, 8, 5, False),
    (2, 2, 11, 10, 1, 2, True, 4, 7, False),
]
CPP_PARAMS = [pytest.param(case, torch.float32, False, id=_case_id(case) + "-f32") for case in CPP_CASES] + [
    pytest.param(CPP_CASES[i], dtype, i % 2 == 0, id=f"{_case_id(CPP_CASES[i])}-{str(dtype)[6:]}")
    for dtype in (torch.bfloat16, torch.float16) for i in (1, 4, 7, 11)
]


@pytest.mark.parametrize("case, dtype, weight_same_dtype", CPP_PARAMS)
def test_cpp_kernels_every_size_and_stride(case, dtype, weight_same_dtype):
    _check_against_reference("cpp", case, dtype, weight_same_dtype)


# Triton with tiles far smaller than the plane and the channels: several pixel tiles, several channel blocks
# and (through the program target) several weight-gradient chunks, each with several pixel steps, as on a GPU.
TRITON_TILE_CASES = [
    ((2, 7, 9, 9, 3, 1, False, 8, 7, False), (4, 16), 4, torch.float32),
    ((1, 6, 9, 7, 5, 2, True, 8, 7, True), (4, 8), 100, torch.bfloat16),
    ((1, 6, 7, 6, 7, 1, False, 6, 7, False), (4, 16), 3, torch.float16),
    ((1, 5, 10, 6, 1, 2, False, 5, 3, False), (4, 8), 40, torch.float32),
]


@pytest.mark.parametrize("case, blocks, programs, dtype", TRITON_TILE_CASES,
                         ids=[f"{_case_id(c)}-b{b[0]}x{b[1]}-p{p}-{str(d)[6:]}" for c, b, p, d in TRITON_TILE_CASES])
def test_triton_multi_tile_and_chunk(monkeypatch, case, blocks, programs, dtype):
    from deps_fast.kernels import depthwise as tk
    monkeypatch.setattr(tk, "BLOCKS_OVERRIDE", blocks)
    monkeypatch.setattr(tk, "TARGET_PROGRAMS_OVERRIDE", programs)
    N, c, H, W, k, s = case[:6]
    OHW = ((H - 1) // s + 1) * ((W - 1) // s + 1)
    assert OHW > blocks[1] and c > blocks[0], "the case must span several tiles"
    _check_against_reference("triton", case, dtype, dtype != torch.float32)


# Shaped like real GPU training (channels_last + bf16, even channel counts, 32-224 px): the CUDA bf16x2 / half2
# channels_last kernels, multi-tile NCHW planes, several deterministic weight-gradient chunks, the generic k = 1
# kernel and Triton's forward pixel tiling. Too large for the interpreter: GPU only.
GPU_CASES = [
    (4, 64, 112, 112, 3, 1, True, 96, 7, False),
    (2, 32, 113, 120, 5, 2, True, 32, 7, True),
    (4, 48, 56, 56, 1, 1, True, 48, 7, False),
    (2, 24, 128, 128, 7, 1, False, 24, 7, False),
    (16, 16, 64, 64, 3, 2, False, 16, 3, False),
    (8, 40, 112, 112, 7, 2, True, 40, 7, False),
]
GPU_PARAMS = [pytest.param(case, dtype, i % 2 == 1, id=f"{_case_id(case)}-{str(dtype)[6:]}")
              for i, case in enumerate(GPU_CASES) for dtype in (torch.bfloat16, torch.float16, torch.float32)]


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("case, dtype, weight_same_dtype", GPU_PARAMS)
def test_gpu_shaped_cases(backend, case, dtype, weight_same_dtype):
    if not torch.cuda.is_available():
        pytest.skip("GPU-sized shapes: needs a CUDA device (the Triton interpreter would take minutes)")
    _check_against_reference(backend, case, dtype, weight_same_dtype)


def test_reference_gradcheck_float64():
    gen = torch.Generator().manual_seed(seed())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 1, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    tr = _transforms(7, torch.float64, "cpu", gen)
    m5, m3 = tr[5].requires_grad_(), tr[3].requires_grad_()
    for k, s in ((3, 1), (5, 2), (7, 1)):
        assert torch.autograd.gradcheck(
            lambda x, w, m5, m3: reference.elastic_depthwise_conv2d(x, w, k, s, {5: m5, 3: m3}), (x, w, m5, m3))


def test_reference_matches_ofa_transform_chain():
    """The 3x3 kernel comes from the *transformed* 5x5 (OFA KERNEL_TRANSFORM_MODE=1), written out by hand."""
    gen = torch.Generator().manual_seed(seed())
    w = torch.randn(6, 1, 7, 7, generator=gen, dtype=torch.float64)
    tr = _transforms(7, torch.float64, "cpu", gen)
    k5 = (w[:, :, 1:6, 1:6].reshape(6, 25) @ tr[5].T).reshape(6, 1, 5, 5)
    k3 = (k5[:, :, 1:4, 1:4].reshape(6, 9) @ tr[3].T).reshape(6, 1, 3, 3)
    torch.testing.assert_close(reference.transformed_kernel(w, 5, tr), k5)
    torch.testing.assert_close(reference.transformed_kernel(w, 3, tr), k3)
    torch.testing.assert_close(reference.transformed_kernel(w, 3, None), w[:, :, 2:5, 2:5])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(backend, channels_last):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, 7, 5, generator=gen).to(device).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(8, 1, 5, 5, generator=gen).to(device).requires_grad_()
    g = torch.randn(2, 6, 4, 3, generator=gen).to(device).contiguous(memory_format=fmt)
    torch.library.opcheck(dw.dwconv_fwd, (x, w, 3, 2, backend, True))
    torch.library.opcheck(dw.dwconv_bwd_input, (g, w.detach(), 3, 2, 7, 5, channels_last, backend))
    torch.library.opcheck(dw.dwconv_bwd_weight, (g, x.detach(), w.detach(), 3, 2, backend, True))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_torch_compile_fullgraph(backend):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    x = torch.randn(2, 5, 9, 9, generator=gen).to(device).requires_grad_()
    w = torch.randn(8, 1, 7, 7, generator=gen).to(device).requires_grad_()
    m5 = (torch.eye(25) + 0.1 * torch.randn(25, 25, generator=gen)).to(device).requires_grad_()

    def block(x, w, m5):
        y = ops.elastic_depthwise_conv2d(x, w, 5, 1, {5: m5}, backend=backend)
        return torch.relu(y).square().sum()

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, w, m5), (x, w, m5))
    want = torch.autograd.grad(block(x, w, m5), (x, w, m5))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("hw", [(12, 10), (7, 7)], ids=["plane120", "plane49"])
def test_weight_grad_is_deterministic(backend, hw):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    x = torch.randn(3, 16, *hw, generator=gen).to(device)
    w = torch.randn(16, 1, 7, 7, generator=gen).to(device).requires_grad_()
    g = torch.randn(3, 16, *hw, generator=gen).to(device)
    results = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            y = ops.elastic_depthwise_conv2d(x, w, 7, 1, backend=backend)
            results.append(torch.autograd.grad(y, w, g)[0])
        finally:
            torch.set_num_threads(old)
    assert torch.equal(results[0], results[1]), "weight gradient changed between identical runs"


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_atomic_weight_grad_matches_reference(backend):
    device = require_backend(backend)
    gen = torch.Generator().manual_seed(seed())
    x = torch.randn(2, 10, 9, 8, generator=gen).to(device)
    w = torch.randn(12, 1, 7, 7, generator=gen).to(device).requires_grad_()
    g = torch.randn(2, 10, 5, 4, generator=gen).to(device)
    got = torch.autograd.grad(ops.elastic_depthwise_conv2d(x, w, 5, 2, backend=backend, deterministic=False), w, g)[0]
    want = torch.autograd.grad(reference.elastic_depthwise_conv2d(x, w, 5, 2), w, g)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpp", "triton", "torch"])
def test_empty_batch(backend):
    """An empty batch: the torch backend (and "auto", which picks it) returns empty outputs and a zero weight
    gradient; an explicitly named fast backend says it cannot run the call."""
    device = require_backend(backend) if backend != "torch" else "cpu"
    x = torch.randn(0, 4, 6, 6, device=device, requires_grad=True)
    w = torch.randn(5, 1, 3, 3, device=device, requires_grad=True)
    if backend != "torch":
        with pytest.raises(ops.BackendUnavailable, match=f"backend '{backend}' cannot run this call: x is empty"):
            ops.elastic_depthwise_conv2d(x, w, 3, 2, backend=backend)
    for name in (backend, "auto") if backend == "torch" else ("auto",):
        y = ops.elastic_depthwise_conv2d(x, w, 3, 2, backend=name)
        assert y.shape == (0, 4, 3, 3)
        (gw,) = torch.autograd.grad(y.sum(), w)
        assert torch.equal(gw, torch.zeros_like(w))


def test_float64_runs_on_torch_backend_only():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(ops.elastic_depthwise_conv2d(x, w, 3), reference.elastic_depthwise_conv2d(x, w, 3))
    with pytest.raises(ops.BackendUnavailable, match="float64"):
        ops.elastic_depthwise_conv2d(x, w, 3, backend="cpp")


# ---- dispatch ----------------------------------------------------------------------------------------------
def test_auto_prefers_cpp_on_cpu():
    require_backend("cpp")
    assert _backend.resolve("auto", torch.device("cpu"), lambda name: None) == "cpp"


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv("DEPS_FAST_BACKEND", "torch")
    assert _backend.resolve("auto", torch.device("cpu"), lambda name: None) == "torch"
    monkeypatch.setenv("DEPS_FAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match="DEPS_FAST_BACKEND.*'bogus'"):
        _backend.resolve("auto", torch.device("cpu"), lambda name: None)


def test_explicit_unavailable_backend_says_why():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3)
    with pytest.raises(ops.BackendUnavailable, match="cuda.*needs CUDA tensors"):
        ops.elastic_depthwise_conv2d(x, w, 3, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.elastic_depthwise_conv2d(x, w, 3, backend="fastest")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = _backend.device_reason("triton", torch.device("cpu"))
    assert reason and "TRITON_INTERPRET=1" in reason


# ---- bad input ---------------------------------------------------------------------------------------------
def _bad(**overrides):
    args = dict(x=torch.randn(2, 4, 8, 8), weight=torch.randn(6, 1, 7, 7), kernel_size=3, stride=1, transforms=None)
    args.update(overrides)
    return args


BAD_INPUTS = [
    (_bad(x=torch.randn(4, 8, 8)), ValueError, r"x must be 4-D \[N, c, H, W\], got shape \(4, 8, 8\)"),
    (_bad(x=[1.0]), TypeError, r"x must be a torch.Tensor, got list"),
    (_bad(weight=torch.randn(6, 7, 7)), ValueError, r"weight must be \[C_max, 1, K, K\] with K odd"),
    (_bad(weight=torch.randn(6, 1, 6, 6)), ValueError, r"K odd, got shape \(6, 1, 6, 6\)"),
    (_bad(weight=torch.randn(3, 1, 7, 7)), ValueError, r"c=4 channels; allowed 1 <= c <= C_max=3"),
    (_bad(kernel_size=4), ValueError, r"kernel_size must be odd and between 1 and K=7.*got 4"),
    (_bad(kernel_size=9), ValueError, r"kernel_size must be odd and between 1 and K=7.*got 9"),
    (_bad(kernel_size=3.0), TypeError, r"kernel_size must be an int.*got 3.0 of type float"),
    (_bad(stride=3), ValueError, r"stride must be 1 or 2, got 3"),
    (_bad(stride=True), TypeError, r"stride must be an int"),
    (_bad(x=torch.randn(2, 4, 8, 8).int()), TypeError, r"x.dtype must be one of float32, bfloat16, float16"),
    (_bad(x=torch.randn(2, 4, 8, 8).half(), weight=torch.randn(6, 1, 7, 7).bfloat16()), TypeError,
     r"weight.dtype must equal x.dtype \(torch.float16\) or be float32.*got torch.bfloat16"),
    (_bad(x=torch.randn(2, 4, 0, 8)), ValueError, r"H, W >= 1, got H=0, W=8"),
    (_bad(x=torch.randn(2, 0, 8, 8)), ValueError, r"c=0 channels"),
    (_bad(transforms=[torch.eye(25)]), TypeError, r"transforms must be None or a mapping"),
    (_bad(transforms={5: torch.eye(9)}), ValueError, r"transforms\[5\] must be a \(25, 25\) tensor, got \(9, 9\)"),
    (_bad(transforms={4: torch.eye(16)}), ValueError, r"transforms key must be an odd kernel size below K=7, got 4"),
    (_bad(transforms={5: torch.eye(25)}), ValueError, r"no matrix for kernel_size=3 \(keys: \[5\]\)"),
    (_bad(kernel_size=5, transforms={5: torch.eye(25).double()}), ValueError,
     r"transforms\[5\] dtype torch.float64 must equal weight.dtype torch.float32"),
]


@pytest.mark.parametrize("args, exc, message", BAD_INPUTS, ids=[re.sub(r"\W+", "_", m)[:40] for _, _, m in BAD_INPUTS])
def test_bad_input_raises_clear_error(args, exc, message):
    with pytest.raises(exc, match=message):
        ops.elastic_depthwise_conv2d(**args)


def test_device_mismatch_raises():
    # validation runs before any kernel, so a meta tensor stands in for a second device
    with pytest.raises(ValueError, match="weight is on cpu but x is on meta"):
        ops.elastic_depthwise_conv2d(torch.randn(1, 2, 5, 5, device="meta"), torch.randn(2, 1, 3, 3), 3)
    with pytest.raises(ValueError, match="weight is on meta but x is on cpu"):
        ops.elastic_depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3, device="meta"), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton compilation caches exist only on a GPU")
def test_triton_compiles_once_per_kernel_size_not_per_channel_count():
    from deps_fast.kernels import depthwise as tk
    w = torch.randn(200, 1, 7, 7, device="cuda")

    def cache_size():
        return sum(len(cache[0]) for cache in tk._dwconv_taps_kernel.device_caches.values())

    ops.elastic_depthwise_conv2d(torch.randn(8, 64, 28, 28, device="cuda"), w, 5, backend="triton")
    before = cache_size()
    for c in (17, 48, 96, 120, 144, 200):
        ops.elastic_depthwise_conv2d(torch.randn(8, c, 28, 28, device="cuda"), w, 5, backend="triton")
    assert cache_size() == before, "a new channel count triggered a Triton recompilation"
