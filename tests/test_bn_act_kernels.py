"""Kernel-level tests of the fused BatchNorm + activation kernels (deps_fast.kernels.bn_act and the CUDA
functions of deps_fast._C), against float64 evaluations of the same formulas written out here.

The four kernels, with z = x * scale + shift and dz = grad_y * act'(z):
  stats            mean and biased variance per channel over N, H, W
  forward          y = act(z)
  backward_reduce  sum dz, sum dz * (x - mean)
  backward_input   training: w * invstd * (dz - sum_dz / count - (x - mean) * invstd^2 * sum_dz_xmu / count)
                   eval:     dz * scale
Inputs are fresh random draws each run (seed in the failure message; DEPS_FAST_TEST_SEED reproduces one), and
the truth is computed in float64 from the same (already rounded) inputs. Tolerances: half an ulp of the output
dtype times 2 (the rounding of the result) plus a few float32 ulps of the magnitudes the kernel's float32 math
adds and multiplies. Outputs and partial buffers are torch.empty, which conftest fills with NaN, so an
unwritten element fails. On CPU the Triton kernels run in the interpreter; the "small" tiling forces several
tiles per program and several partials per channel on these small shapes, so the two-level reductions run.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from deps_fast import _ext
from helpers import require_backend, seed

EPS32 = torch.finfo(torch.float32).eps
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ACTS = ("none", "relu", "relu6", "hswish")  # codes 0..3

# (N, c, H, W): odd planes, c = 1, N = 1, 1x1 planes, planes smaller and larger than a forced tile
SHAPES = [(2, 5, 7, 9), (1, 1, 1, 1), (1, 3, 1, 1), (3, 1, 5, 4), (4, 17, 1, 1), (2, 33, 6, 5), (1, 8, 13, 11),
          (5, 2, 3, 3), (3, 4, 2, 3)]
# the shapes that span several tiles under the forced small tiling (the interpreter runs ~20 ms per program,
# so the forced tiling runs on these only)
MULTI_TILE = {(2, 5, 7, 9), (4, 17, 1, 1), (2, 33, 6, 5), (1, 8, 13, 11), (5, 2, 3, 3), (3, 4, 2, 3)}
if torch.cuda.is_available():  # several blocks per channel in the CUDA grid; too slow for the interpreter
    SHAPES += [(8, 40, 33, 33), (32, 96, 28, 28), (64, 24, 7, 7), (3, 1280, 1, 1), (2, 3, 113, 111)]

# Triton tilings: "auto" is what users get (in the interpreter: one large tile per program); "small" forces
# tiles of 8 channels x 2 rows x 8 pixels (channels_last: 8 x 16 rows), two tiles per program, so that
# channel blocks, row groups, pixel blocks, several tiles per program and several partials per channel all run.
TILINGS = {"auto": (None, None), "small": ((8, 2, 8), 2)}


def _shape_id(shape):
    return "x".join(map(str, shape))


# ---- the backends under test ------------------------------------------------------------------------------
@pytest.fixture
def kernels(request, monkeypatch):
    """The four functions of one backend ("triton" with a tiling, or "cuda"), and the device they run on."""
    backend, tiling = request.param
    k = _Kernels(backend)
    if backend == "triton":
        from deps_fast.kernels import bn_act
        monkeypatch.setattr(bn_act, "FORCE_TILE", TILINGS[tiling][0])
        monkeypatch.setattr(bn_act, "FORCE_TILES_PER_PROGRAM", TILINGS[tiling][1])
    return k


class _Kernels:
    def __init__(self, backend):
        self.device = require_backend(backend)
        if backend == "triton":
            from deps_fast.kernels import bn_act
            self.stats, self.forward = bn_act.stats, bn_act.forward
            self.backward_reduce, self.backward_input = bn_act.backward_reduce, bn_act.backward_input
        else:
            ext = _ext.extension()
            self.stats, self.forward = ext.bn_act_stats_cuda, ext.bn_act_forward_cuda
            self.backward_reduce, self.backward_input = ext.bn_act_backward_reduce_cuda, ext.bn_act_backward_input_cuda


KERNELS = [("triton", "auto"), ("triton", "small"), ("cuda", "auto")]


def _kernel_id(k):
    return k[0] if k[0] == "cuda" else f"{k[0]}-{k[1]}"


def with_kernels(fn):
    """Runs a test once per backend / tiling (no per-case parameters)."""
    return pytest.mark.parametrize("kernels", KERNELS, ids=_kernel_id, indirect=True)(fn)


# ---- float64 truth ----------------------------------------------------------------------------------------
def _chan(v):
    return v.double().cpu().view(1, -1, 1, 1)


def _act64(z, act):
    if act == "relu":
        return z.clamp_min(0)
    if act == "relu6":
        return z.clamp(0, 6)
    if act == "hswish":
        return z * (z + 3).clamp(0, 6) / 6
    return z


def _act_grad64(z, act):
    """torch's backward at the kinks: relu [z > 0], relu6 [0 < z < 6], hswish 0 / z/3 + 1/2 / 1 at -3 and 3."""
    one, zero = torch.ones_like(z), torch.zeros_like(z)
    if act == "relu":
        return torch.where(z > 0, one, zero)
    if act == "relu6":
        return torch.where((z > 0) & (z < 6), one, zero)
    if act == "hswish":
        return torch.where(z <= -3, zero, torch.where(z < 3, z / 3 + 0.5, one))
    return one


def _assert_close(where, name, ours, truth, out_dtype, magnitude):
    """Elementwise |ours - truth| <= eps(out) |truth| + 16 eps32 magnitude + the dtype's subnormal spacing."""
    assert ours.shape == truth.shape, f"{where} {name}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    ours64 = ours.double().cpu()
    assert not torch.isnan(ours64).any(), f"{where} {name}: NaN (an unwritten element?) at " \
                                          f"{torch.isnan(ours64).nonzero()[:5].tolist()}"
    fi = torch.finfo(out_dtype)
    tol = fi.eps * truth.abs() + 16 * EPS32 * magnitude + fi.tiny * fi.eps
    excess = (ours64 - truth).abs() - tol
    worst = int(excess.flatten().argmax())
    assert excess.max() <= 0, (f"{where} {name}: error {(ours64 - truth).abs().flatten()[worst]:.3g} exceeds "
                               f"tolerance {tol.flatten()[worst]:.3g} at flat index {worst} "
                               f"(ours {ours64.flatten()[worst]:.6g}, truth {truth.flatten()[worst]:.6g})")


# ---- inputs -----------------------------------------------------------------------------------------------
def _inputs(shape, dtype, channels_last, device, gen, mean_offset=0.0):
    N, c, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    centre = mean_offset + 0.5 * torch.randn(1, c, 1, 1, generator=gen)
    spread = torch.exp(0.3 * torch.randn(1, c, 1, 1, generator=gen))
    x = (centre + spread * torch.randn(shape, generator=gen)).to(dtype)
    gy = torch.randn(shape, generator=gen).to(dtype)
    # z = x * scale + shift spans every region of every activation (below -3, the kinks, above 6)
    scale = 3 * torch.randn(c, generator=gen)
    shift = 2 * torch.randn(c, generator=gen)
    weight = torch.randn(c, generator=gen)
    to = dict(device=device)
    return (x.to(**to).contiguous(memory_format=fmt), gy.to(**to).contiguous(memory_format=fmt),
            scale.to(**to), shift.to(**to), weight.to(**to))


def _check_layout(where, name, out, x):
    assert out.dtype == x.dtype and out.device == x.device, f"{where} {name}: {out.dtype} on {out.device}"
    if x.is_contiguous(memory_format=torch.channels_last):
        assert out.is_contiguous(memory_format=torch.channels_last), f"{where} {name} lost channels_last"
    else:
        assert out.is_contiguous(), f"{where} {name}: not NCHW-contiguous like x"


def _params(with_act):
    """(kernels, shape, channels_last, dtype, act) cases: every shape in both layouts, every activation (forward
    and backward), the dtypes rotating so each meets every shape, layout and activation; the forced small
    tiling on the multi-tile shapes with one activation each."""
    out = []
    for kern in KERNELS:
        for i, shape in enumerate(SHAPES):
            if kern[1] == "small" and shape not in MULTI_TILE:
                continue
            for cl in (False, True):
                acts = list(ACTS) if with_act else ["none"]
                if kern[1] == "small" and with_act:
                    acts = [ACTS[(i + cl) % len(ACTS)]]
                for j, act in enumerate(acts):
                    dtype = DTYPES[(i + j + cl) % len(DTYPES)]
                    tag = f"{_kernel_id(kern)}-{_shape_id(shape)}-{'cl' if cl else 'nchw'}-{str(dtype)[6:]}"
                    out.append(pytest.param(kern, shape, cl, dtype, act, id=tag + (f"-{act}" if with_act else "")))
    return out


def _parametrize(with_act):
    return pytest.mark.parametrize("kernels, shape, cl, dtype, act", _params(with_act), indirect=["kernels"])


# ---- tests ------------------------------------------------------------------------------------------------
def test_poison_is_active():
    """The NaN checks below can fail only if torch.empty hands out NaN-filled memory (conftest)."""
    assert torch.isnan(torch.empty(64)).all()


@_parametrize(with_act=False)
def test_stats(kernels, shape, cl, dtype, act):
    case_seed = seed()
    where = f"[seed={case_seed}]"
    gen = torch.Generator().manual_seed(case_seed)
    x, *_ = _inputs(shape, dtype, cl, kernels.device, gen)
    mean, var = kernels.stats(x)
    x64 = x.double().cpu()
    mean64 = x64.mean(dim=(0, 2, 3))
    var64 = x64.var(dim=(0, 2, 3), unbiased=False)
    for name, v in (("mean", mean), ("var", var)):
        assert v.dtype == torch.float32 and v.shape == (shape[1],), f"{where} {name}: {v.dtype} {tuple(v.shape)}"
    _assert_close(where, "mean", mean, mean64, torch.float32, x64.abs().mean(dim=(0, 2, 3)))
    _assert_close(where, "var", var, var64, torch.float32, _var_magnitude(mean64, var64))


def _var_magnitude(mean64, var64):
    """A stable merge of (count, mean, M2) errs by ~eps32 * (var + |mean| * std): each merge rounds the running
    mean at |mean|'s scale and multiplies that by deviations of std's scale. E[x^2] - E[x]^2 would err by
    eps32 * mean^2 instead, which the large-mean test below makes far larger than this bound."""
    return 4 * var64 + mean64.abs() * var64.sqrt()


@with_kernels
@pytest.mark.parametrize("cl", [False, True])
def test_stats_numerically_stable(kernels, cl):
    """A mean of 300 over a spread of 1: E[x^2] - E[x]^2 in float32 would lose the variance (errors ~1e-2)."""
    case_seed = seed()
    gen = torch.Generator().manual_seed(case_seed)
    x, *_ = _inputs((3, 6, 9, 7), torch.float32, cl, kernels.device, gen, mean_offset=300.0)
    mean, var = kernels.stats(x)
    x64 = x.double().cpu()
    var64 = x64.var(dim=(0, 2, 3), unbiased=False)
    _assert_close(f"[seed={case_seed}]", "var", var, var64, torch.float32,
                  _var_magnitude(x64.mean(dim=(0, 2, 3)), var64))


@_parametrize(with_act=True)
def test_forward(kernels, shape, cl, dtype, act):
    case_seed = seed()
    where = f"[seed={case_seed}]"
    gen = torch.Generator().manual_seed(case_seed)
    x, _, scale, shift, _ = _inputs(shape, dtype, cl, kernels.device, gen)
    y = kernels.forward(x, scale, shift, ACTS.index(act))
    _check_layout(where, "y", y, x)
    x64 = x.double().cpu()
    z = x64 * _chan(scale) + _chan(shift)
    z_mag = (x64 * _chan(scale)).abs() + _chan(shift).abs()
    _assert_close(where, "y", y, _act64(z, act), dtype, z_mag * (1 + z.abs()))


def _backward_truth(x, gy, scale, shift, weight, act, eps=1e-5):
    """float64 dz, the statistics the backward gets (float32 as the op would pass them), the sums, and the
    magnitude of dz's float32 evaluation error per element (in units of eps32)."""
    x64, gy64 = x.double().cpu(), gy.double().cpu()
    mean = x64.mean(dim=(0, 2, 3)).float()
    invstd = torch.rsqrt(x64.var(dim=(0, 2, 3), unbiased=False) + eps).float()
    z = x64 * _chan(scale) + _chan(shift)
    d = _act_grad64(z, act)
    dz = gy64 * d
    dz_mag = gy64.abs() * (d.abs() + (x64 * _chan(scale)).abs() + _chan(shift).abs())
    xmu = x64 - _chan(mean)
    return dz, dz_mag, xmu, mean, invstd


@_parametrize(with_act=True)
def test_backward(kernels, shape, cl, dtype, act):
    case_seed = seed()
    where = f"[seed={case_seed}]"
    gen = torch.Generator().manual_seed(case_seed)
    x, gy, scale, shift, weight = _inputs(shape, dtype, cl, kernels.device, gen)
    code = ACTS.index(act)
    dz, dz_mag, xmu, mean, invstd = _backward_truth(x, gy, scale, shift, weight, act)
    dev = kernels.device

    sum_dz, sum_dzx = kernels.backward_reduce(gy, x, scale, shift, mean.to(dev), code)
    truth_dz, truth_dzx = dz.sum(dim=(0, 2, 3)), (dz * xmu).sum(dim=(0, 2, 3))
    _assert_close(where, "sum_dz", sum_dz, truth_dz, torch.float32, 2 * dz_mag.sum(dim=(0, 2, 3)))
    _assert_close(where, "sum_dz_xmu", sum_dzx, truth_dzx, torch.float32,
                  2 * (dz_mag * (xmu.abs() + 1e-3)).sum(dim=(0, 2, 3)))

    # backward_input gets the float64 sums rounded to float32: tested on its own, not through backward_reduce
    count = shape[0] * shape[2] * shape[3]
    s_dz, s_dzx = truth_dz.float(), truth_dzx.float()
    w64, inv64 = _chan(weight), _chan(invstd)
    a = w64 * inv64
    b = a * inv64 ** 2 * _chan(s_dzx) / count
    dterm = a * _chan(s_dz) / count
    gx = kernels.backward_input(gy, x, scale, shift, mean.to(dev), invstd.to(dev), weight, s_dz.to(dev),
                                s_dzx.to(dev), count, code, True)
    _check_layout(where, "grad_x (training)", gx, x)
    _assert_close(where, "grad_x (training)", gx, a * dz - xmu * b - dterm, dtype,
                  4 * (a.abs() * dz_mag + (xmu * b).abs() + dterm.abs()))

    gx = kernels.backward_input(gy, x, scale, shift, None, None, None, None, None, count, code, False)
    _check_layout(where, "grad_x (eval)", gx, x)
    _assert_close(where, "grad_x (eval)", gx, dz * _chan(scale), dtype, 2 * _chan(scale).abs() * dz_mag)


@with_kernels
def test_activation_kinks_match_torch(kernels):
    """At z exactly -3, 0, 3, 6 (and next to them) the kernels pick torch's one-sided derivative."""
    vals = torch.tensor([-3.0, -2.999, -3.001, 0.0, 1e-30, -1e-30, 3.0, 2.999, 3.001, 6.0, 5.999, 6.001, 1.0, -7.0])
    x = vals.view(1, 1, 2, 7).to(kernels.device)
    gy = torch.linspace(0.5, 2.0, vals.numel()).view_as(x).to(kernels.device)
    one, zero = torch.ones(1, device=kernels.device), torch.zeros(1, device=kernels.device)
    for code, fn in enumerate((lambda t: t, F.relu, F.relu6, F.hardswish)):
        leaf = x.detach().clone().requires_grad_()
        want_y = fn(leaf)
        (want_g,) = torch.autograd.grad(want_y, leaf, gy)
        y = kernels.forward(x, one, zero, code)
        torch.testing.assert_close(y, want_y.detach(), rtol=2 * EPS32, atol=0, msg=f"act {ACTS[code]} forward")
        g = kernels.backward_input(gy, x, one, zero, None, None, None, None, None, 1, code, False)
        # exact where torch selects 0 or grad_y; a few float32 ulps of z / 3 + 1/2 (a GPU divides approximately)
        torch.testing.assert_close(g, want_g, rtol=4 * EPS32, atol=0, msg=f"act {ACTS[code]} grad: "
                                   f"{g.flatten().tolist()} != torch {want_g.flatten().tolist()}")


@with_kernels
def test_grad_in_another_layout(kernels):
    """A channels_last x with an NCHW grad_y (autograd does not promise matching layouts)."""
    gen = torch.Generator().manual_seed(seed())
    x, gy, scale, shift, weight = _inputs((2, 6, 5, 3), torch.float32, True, kernels.device, gen)
    gy_nchw = gy.contiguous()
    mean = torch.zeros(6, device=kernels.device)
    got = kernels.backward_reduce(gy_nchw, x, scale, shift, mean, 3)
    want = kernels.backward_reduce(gy, x, scale, shift, mean, 3)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    gx = kernels.backward_input(gy_nchw, x, scale, shift, None, None, None, None, None, 1, 3, False)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gx, kernels.backward_input(gy, x, scale, shift, None, None, None, None, None, 1, 3,
                                                          False))


@with_kernels
def test_reductions_are_deterministic(kernels):
    gen = torch.Generator().manual_seed(seed())
    x, gy, scale, shift, _ = _inputs((3, 7, 11, 6), torch.bfloat16, False, kernels.device, gen)
    mean = torch.randn(7, generator=gen).to(kernels.device)
    first = kernels.stats(x) + kernels.backward_reduce(gy, x, scale, shift, mean, 3)
    second = kernels.stats(x) + kernels.backward_reduce(gy, x, scale, shift, mean, 3)
    for a, b in zip(first, second):
        assert torch.equal(a, b), "a reduction changed between identical calls"


def test_triton_bad_input_names_the_argument():
    from deps_fast.kernels import bn_act
    x = torch.zeros(1, 3, 2, 2)
    v = torch.zeros(3)
    with pytest.raises(ValueError, match=r"act must be an activation code 0\.\.3 .* got 4"):
        bn_act.forward(x, v, v, 4)
    with pytest.raises(ValueError, match=r"scale must be a contiguous float32 \[3\] tensor"):
        bn_act.forward(x, v.double(), v, 1)
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        bn_act.stats(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"grad_y must match x's shape"):
        bn_act.backward_reduce(torch.zeros(1, 3, 2, 1), x, v, v, v, 0)
    with pytest.raises(ValueError, match=r"mean is required here"):
        bn_act.backward_input(x, x, v, v, None, v, v, v, v, 4, 0, True)


# Compiles every Triton kernel for sm_90 (H100 / H200) the way a GPU would, with the divisible-by-16
# specialisation of aligned pointers, C and HW that real launches get, and checks the elementwise and reduction
# passes load (and forward stores) 16 bytes at a time in both layouts. Runs in a subprocess: the kernels in this
# process were defined under the interpreter.
_SM90_COMPILE = r"""
import os, re, sys
os.environ.pop("TRITON_INTERPRET", None)
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:
    print(f"this Triton cannot compile ahead of time: {exc}"); sys.exit(3)
from deps_fast.kernels import bn_act as k

def compile_ptx(fn, types, consts, div16):
    sig = {name: types.get(name, "constexpr") for name in fn.arg_names}
    idx = fn.arg_names.index
    src = ASTSource(fn=fn, signature=sig, constexprs={(idx(n),): v for n, v in consts.items()},
                    attrs={(idx(n),): [["tt.divisibility", 16]] for n in div16})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]

for dt in ("bf16", "fp32", "fp16"):
    for tile in (dict(BLOCK_C=1, BLOCK_N=1, BLOCK_HW=2048), dict(BLOCK_C=128, BLOCK_N=16, BLOCK_HW=1, HW=1)):
        geo = {"N": "i32", "C": "i32", "HW": "i32", "tiles_per_program": "i32"}
        if "HW" in tile:
            del geo["HW"]
        div = ["C"] + (["HW"] if "HW" in geo else [])
        t = lambda *names: {n: f"*{dt}" for n in names}
        f32 = lambda *names: {n: "*fp32" for n in names}
        vecs = ["scale_ptr", "shift_ptr", "mean_ptr", "invstd_ptr", "weight_ptr", "sum_dz_ptr", "sum_dzx_ptr"]
        kernels = [
            (k._stats_partial_kernel, {**t("x_ptr"), **f32("part_ptr", "count_ptr"), **geo}, {}, True, False),
            (k._backward_reduce_kernel, {**t("gy_ptr", "x_ptr"), **f32("scale_ptr", "shift_ptr", "mean_ptr", "part_ptr"),
                                         **geo}, {"ACT": 3}, True, False),
        ] + [(k._forward_kernel, {**t("x_ptr", "y_ptr"), **f32("scale_ptr", "shift_ptr"), **geo}, {"ACT": a}, True, True)
             for a in range(4)] + [
            (k._backward_input_kernel, {**t("gy_ptr", "x_ptr", "gx_ptr"), **f32(*vecs), "inv_count": "fp32", **geo},
             {"ACT": 3, "TRAINING": tr}, True, True) for tr in (False, True)]
        for fn, types, consts, vec_load, vec_store in kernels:
            ptrs = [n for n, ty in types.items() if ty.startswith("*")]
            ptx = compile_ptx(fn, types, {**tile, **consts}, ptrs + div)
            where = f"{fn.__name__} {dt} {tile} {consts}"
            assert not vec_load or "ld.global.v4" in ptx, f"{where}: no 16-byte loads"
            assert not vec_store or "st.global.v4" in ptx, f"{where}: no 16-byte stores"
compile_ptx(k._stats_merge_kernel, {"part_ptr": "*fp32", "count_ptr": "*fp32", "mean_ptr": "*fp32",
                                    "var_ptr": "*fp32", "C": "i32", "chunks": "i32"}, {"BLOCK_C": 128}, [])
print("ok")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels in the tests above")
def test_triton_kernels_compile_for_sm90_with_vector_access(tmp_path):
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # really compile, every run
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton's default (it warns while that default is changing)
    done = subprocess.run([sys.executable, "-c", _SM90_COMPILE], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-4000:]
