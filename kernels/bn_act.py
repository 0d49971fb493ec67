"""Triton kernels of the fused elastic BatchNorm + activation: statistics, forward, and the two backward passes.
No autograd here: deps_fast.ops wires these into the custom op. All math and accumulation is float32; x and
the gradients may be float32, bfloat16 or float16, NCHW-contiguous or channels_last; outputs keep x's dtype
and memory format. Per-channel vectors (scale, shift, mean, invstd, weight_c) are float32 [c].

  stats(x)                                   -> mean, biased var                    (per channel, over N, H, W)
  forward(x, scale, shift, act)              -> y = act(x * scale + shift)
  backward_reduce(gy, x, scale, shift, mean, act) -> sum dz, sum dz * (x - mean)    dz = gy * act'(z)
  backward_input(...)                        -> grad x, training or eval BatchNorm backward from dz

Activation codes: 0 none, 1 relu, 2 relu6, 3 hswish, with torch's backward conventions at the kinks:
relu' = [z > 0], relu6' = [0 < z < 6] (hardtanh), hswish' = 0 for z <= -3, z / 3 + 1/2 for -3 < z < 3, 1 above.

One index rule serves both layouts. Element (n, c, p) of x lives at (n * C + c) * HW + p; a channels_last
tensor is the same rule with N * HW rows of one pixel each (HW = 1, p = 0: row * C + c), so the kernels never
branch on the layout and never copy. A tile is [BLOCK_C channels, BLOCK_N rows x BLOCK_HW pixels]: pixels are
contiguous for NCHW, channels for channels_last, and several small NCHW planes share a tile (BLOCK_N > 1).
The tiles of one channel block are dealt to `chunks` programs in contiguous runs. Reductions are two-level and
deterministic: each program writes its float32 partial per channel, a second step merges the partials in chunk
order (statistics: Chan's pairwise merge of (count, mean, M2), so a large mean does not cancel the variance).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from deps_fast._util import triton_interpreting

_INTERPRET = triton_interpreting()  # fixed when the kernels are defined, as Triton itself is

ACTIVATIONS = ("none", "relu", "relu6", "hswish")  # index = the activation code of every function here

# Tests force small tiles and many chunks on small shapes, so multi-tile loops and the partial merges run:
# FORCE_TILE = (BLOCK_C, BLOCK_N, BLOCK_HW), powers of two (channels_last, one pixel per row, takes
# (BLOCK_C, BLOCK_N * BLOCK_HW, 1): the same pixels per tile); FORCE_TILES_PER_PROGRAM = the tiles one program
# walks (so it sets the number of chunks). None: the shape-based choice.
FORCE_TILE: Optional[Tuple[int, int, int]] = None
FORCE_TILES_PER_PROGRAM: Optional[int] = None

_INT32_MAX = 2**31 - 1


# ---- device helpers ------------------------------------------------------------------------------------------
@triton.jit
def _act(z, ACT: tl.constexpr):
    # tl.where on a comparison (false for NaN) keeps NaN as torch does; tl.maximum would drop it
    if ACT == 1:
        z = tl.where(z < 0.0, 0.0, z)
    elif ACT == 2:
        z = tl.where(z < 0.0, 0.0, tl.where(z > 6.0, 6.0, z))
    elif ACT == 3:
        z = z * tl.where(z < -3.0, 0.0, tl.where(z > 3.0, 6.0, z + 3.0)) / 6.0
    return z


@triton.jit
def _act_backward(gy, z, ACT: tl.constexpr):
    """dz = gy * act'(z), selecting gy (not multiplying by 0 / 1) where torch's backward does."""
    if ACT == 1:
        gy = tl.where(z > 0.0, gy, 0.0)
    elif ACT == 2:
        gy = tl.where((z > 0.0) & (z < 6.0), gy, 0.0)
    elif ACT == 3:
        gy = tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, gy * (z / 3.0 + 0.5), gy))
    return gy


@triton.jit
def _channels(C, BLOCK_C: tl.constexpr):
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return c, c < C


@triton.jit
def _tile_range(N, HW, tiles_per_program, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    """This program's run of tiles [start, end) and the number of pixel blocks per row group."""
    tiles_hw = tl.cdiv(HW, BLOCK_HW)
    n_tiles = tl.cdiv(N, BLOCK_N) * tiles_hw
    start = tl.program_id(0) * tiles_per_program
    return start, tl.minimum(start + tiles_per_program, n_tiles), tiles_hw


@triton.jit
def _tile(t, tiles_hw, N, C, HW, c, c_ok, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Tile t: the 64-bit offset of its first row, the 32-bit offsets [BLOCK_C, BLOCK_N * BLOCK_HW] from there,
    the mask, and its number of valid pixels per channel (float32)."""
    n0 = (t // tiles_hw) * BLOCK_N
    p0 = (t % tiles_hw) * BLOCK_HW
    j = tl.arange(0, BLOCK_N * BLOCK_HW)
    row = j // BLOCK_HW  # BLOCK_HW is a power of two: a shift, not a division
    p = p0 + j % BLOCK_HW
    pix_ok = (n0 + row < N) & (p < HW)
    base = n0.to(tl.int64) * C * HW
    offs = (row[None, :] * C + c[:, None]) * HW + p[None, :]
    count = (tl.minimum(N - n0, BLOCK_N) * tl.minimum(HW - p0, BLOCK_HW)).to(tl.float32)
    return base, offs, c_ok[:, None] & pix_ok[None, :], count


# ---- kernels -------------------------------------------------------------------------------------------------
# C and HW stay specialised (Triton's divisible-by-16 / == 1 classes: at most a few variants) because that is
# what lets it vectorise the loads; N and the tile counts vary freely without recompiling.
@triton.jit(do_not_specialize=["N", "tiles_per_program"])
def _stats_partial_kernel(x_ptr, part_ptr, count_ptr, N, C, HW, tiles_per_program,
                          BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    # part[0, chunk, c] = mean, part[1, chunk, c] = M2 of this program's pixels; count[chunk] = their number.
    # Each tile's mean and M2 are exact two-pass values over the tile, merged into the running pair (Chan).
    c, c_ok = _channels(C, BLOCK_C)
    start, end, tiles_hw = _tile_range(N, HW, tiles_per_program, BLOCK_N, BLOCK_HW)
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    count = tl.sum(tl.zeros((BLOCK_C,), dtype=tl.float32), axis=0)
    for t in range(start, end):
        base, offs, ok, n_t = _tile(t, tiles_hw, N, C, HW, c, c_ok, BLOCK_N, BLOCK_HW)
        x = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        mean_t = tl.sum(x, axis=1) / n_t
        d = tl.where(ok, x - mean_t[:, None], 0.0)
        total = count + n_t
        delta = mean_t - mean
        mean += delta * (n_t / total)
        m2 += tl.sum(d * d, axis=1) + delta * delta * (count * (n_t / total))
        count = total
    chunk = tl.program_id(0)
    tl.store(part_ptr + chunk * C + c, mean, mask=c_ok)
    tl.store(part_ptr + (tl.num_programs(0) + chunk) * C + c, m2, mask=c_ok)
    if tl.program_id(1) == 0:
        tl.store(count_ptr + chunk, count)


@triton.jit(do_not_specialize=["chunks"])
def _stats_merge_kernel(part_ptr, count_ptr, mean_ptr, var_ptr, C, chunks, BLOCK_C: tl.constexpr):
    # Chan's merge of the chunks' (count, mean, M2) in chunk order: the same result on every run.
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    count = tl.sum(tl.zeros((BLOCK_C,), dtype=tl.float32), axis=0)
    for k in range(0, chunks):
        n_k = tl.load(count_ptr + k)
        mean_k = tl.load(part_ptr + k * C + c, mask=c_ok, other=0.0)
        m2_k = tl.load(part_ptr + (chunks + k) * C + c, mask=c_ok, other=0.0)
        total = count + n_k
        delta = mean_k - mean
        mean += delta * (n_k / total)
        m2 += m2_k + delta * delta * (count * (n_k / total))
        count = total
    tl.store(mean_ptr + c, mean, mask=c_ok)
    tl.store(var_ptr + c, m2 / count, mask=c_ok)


@triton.jit(do_not_specialize=["N", "tiles_per_program"])
def _forward_kernel(x_ptr, scale_ptr, shift_ptr, y_ptr, N, C, HW, tiles_per_program, ACT: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    c, c_ok = _channels(C, BLOCK_C)
    start, end, tiles_hw = _tile_range(N, HW, tiles_per_program, BLOCK_N, BLOCK_HW)
    scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)[:, None]
    shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)[:, None]
    for t in range(start, end):
        base, offs, ok, _ = _tile(t, tiles_hw, N, C, HW, c, c_ok, BLOCK_N, BLOCK_HW)
        x = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        y = _act(x * scale + shift, ACT)
        tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["N", "tiles_per_program"])
def _backward_reduce_kernel(gy_ptr, x_ptr, scale_ptr, shift_ptr, mean_ptr, part_ptr, N, C, HW,
                            tiles_per_program, ACT: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    # part[0, chunk, c] = sum dz, part[1, chunk, c] = sum dz * (x - mean) over this program's pixels
    c, c_ok = _channels(C, BLOCK_C)
    start, end, tiles_hw = _tile_range(N, HW, tiles_per_program, BLOCK_N, BLOCK_HW)
    scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)[:, None]
    shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)[:, None]
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)[:, None]
    acc_dz = tl.zeros((BLOCK_C, BLOCK_N * BLOCK_HW), dtype=tl.float32)
    acc_dzx = tl.zeros((BLOCK_C, BLOCK_N * BLOCK_HW), dtype=tl.float32)
    for t in range(start, end):
        base, offs, ok, _ = _tile(t, tiles_hw, N, C, HW, c, c_ok, BLOCK_N, BLOCK_HW)
        x = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        dz = _act_backward(gy, x * scale + shift, ACT)  # masked lanes: gy = 0, so dz = 0
        acc_dz += dz
        acc_dzx += dz * (x - mean)
    chunk = tl.program_id(0)
    tl.store(part_ptr + chunk * C + c, tl.sum(acc_dz, axis=1), mask=c_ok)
    tl.store(part_ptr + (tl.num_programs(0) + chunk) * C + c, tl.sum(acc_dzx, axis=1), mask=c_ok)


@triton.jit(do_not_specialize=["N", "tiles_per_program"])
def _backward_input_kernel(gy_ptr, x_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, weight_ptr, sum_dz_ptr,
                           sum_dzx_ptr, gx_ptr, inv_count, N, C, HW, tiles_per_program,
                           ACT: tl.constexpr, TRAINING: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_HW: tl.constexpr):
    # training: gx = w * invstd * (dz - sum_dz / count - (x - mean) * invstd^2 * sum_dzx / count)
    #         = a * dz - (x - mean) * b - d, with per-channel a, b, d computed once per program
    # eval:     gx = dz * scale (the statistics are constants)
    c, c_ok = _channels(C, BLOCK_C)
    start, end, tiles_hw = _tile_range(N, HW, tiles_per_program, BLOCK_N, BLOCK_HW)
    scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)[:, None]
    shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)[:, None]
    if TRAINING:
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
        a = tl.load(weight_ptr + c, mask=c_ok, other=0.0) * invstd
        b = a * invstd * invstd * tl.load(sum_dzx_ptr + c, mask=c_ok, other=0.0) * inv_count
        d = a * tl.load(sum_dz_ptr + c, mask=c_ok, other=0.0) * inv_count
        mean, a, b, d = mean[:, None], a[:, None], b[:, None], d[:, None]
    for t in range(start, end):
        base, offs, ok, _ = _tile(t, tiles_hw, N, C, HW, c, c_ok, BLOCK_N, BLOCK_HW)
        x = tl.load(x_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + base + offs, mask=ok, other=0.0).to(tl.float32)
        dz = _act_backward(gy, x * scale + shift, ACT)
        if TRAINING:
            gx = a * dz - (x - mean) * b - d
        else:
            gx = dz * scale
        tl.store(gx_ptr + base + offs, gx.to(gx_ptr.dtype.element_ty), mask=ok)


# ---- host side -----------------------------------------------------------------------------------------------
def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when NCHW-contiguous or channels_last (no copy); any other strides: an NCHW copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t in x's memory layout (a copy only when they differ, e.g. an NCHW gradient of a channels_last x)."""
    if _is_channels_last(x):
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def _geometry(x: torch.Tensor) -> Tuple[int, int, int]:
    """(rows, C, HW) of the index rule (row * C + c) * HW + p: channels_last is N * H * W rows of one pixel."""
    N, C, H, W = x.shape
    if _is_channels_last(x) or H * W == 1:
        return N * H * W, C, 1
    return N, C, H * W


def _tile_shape(rows: int, C: int, HW: int) -> Tuple[int, int, int]:
    if FORCE_TILE is not None:
        bc, bn, bhw = FORCE_TILE
        return (bc, bn * bhw, 1) if HW == 1 else (bc, bn, bhw)
    # The interpreter pays per program and per op, not per element: few, large tiles. A GPU wants ~2K
    # elements per program (16 per thread at 4 warps), the contiguous axis long enough for full sectors.
    tile = 16384 if _INTERPRET else 2048
    if HW == 1:  # channels_last (or 1x1 planes): channels contiguous
        bc = min(triton.next_power_of_2(C), tile if _INTERPRET else 128)
        return bc, min(triton.next_power_of_2(rows), max(1, tile // bc)), 1
    bhw = min(triton.next_power_of_2(HW), tile)
    bc = min(triton.next_power_of_2(C), max(1, tile // bhw))
    return bc, min(triton.next_power_of_2(rows), max(1, tile // (bhw * bc))), bhw


def _target_programs(device: torch.device, reduction: bool) -> int:
    if _INTERPRET or device.type != "cuda":
        return 64 if reduction else 256
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    # reductions: enough programs to fill the GPU, few partials to merge; elementwise: one tile each, up to
    # a grid large enough that every SM has many programs in flight
    return 4 * sms if reduction else 64 * sms


def _launch_geometry(x: torch.Tensor, reduction: bool):
    """(rows, C, HW, BLOCK_C, BLOCK_N, BLOCK_HW, tiles_per_program, chunks, channel_blocks)."""
    rows, C, HW = _geometry(x)
    bc, bn, bhw = _tile_shape(rows, C, HW)
    if bn * C * HW > _INT32_MAX:
        raise ValueError(f"bn_act: one tile's offsets (BLOCK_N={bn} x C={C} x HW={HW}) exceed 32 bits; "
                         "planes this large are not supported")
    c_blocks = triton.cdiv(C, bc)
    n_tiles = triton.cdiv(rows, bn) * triton.cdiv(HW, bhw)
    if FORCE_TILES_PER_PROGRAM is not None:
        per = FORCE_TILES_PER_PROGRAM
    else:
        per = triton.cdiv(n_tiles, max(1, _target_programs(x.device, reduction) // c_blocks))
    # the chunking depends only on the shapes and the device: the same partials in the same order every run
    return rows, C, HW, bc, bn, bhw, per, triton.cdiv(n_tiles, per), c_blocks


def _check(fn: str, x: torch.Tensor, **vectors) -> None:
    if x.dim() != 4:
        raise ValueError(f"{fn}: x must be 4-D [N, c, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"{fn}: x must be float32, bfloat16 or float16, got {x.dtype}")
    C = x.shape[1]
    for name, v in vectors.items():
        if v is None:
            raise ValueError(f"{fn}: {name} is required here, got None")
        if v.dtype != torch.float32 or v.shape != (C,) or v.device != x.device or not v.is_contiguous():
            raise ValueError(f"{fn}: {name} must be a contiguous float32 [{C}] tensor on {x.device}, got "
                             f"{v.dtype} {tuple(v.shape)} on {v.device}")


def _check_act(fn: str, act: int) -> int:
    if act not in range(len(ACTIVATIONS)):
        raise ValueError(f"{fn}: act must be an activation code 0..{len(ACTIVATIONS) - 1} {ACTIVATIONS}, got {act!r}")
    return int(act)


def _check_grad(fn: str, grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if grad_y.shape != x.shape or grad_y.dtype != x.dtype or grad_y.device != x.device:
        raise ValueError(f"{fn}: grad_y must match x's shape, dtype and device {tuple(x.shape)} {x.dtype} "
                         f"{x.device}, got {tuple(grad_y.shape)} {grad_y.dtype} {grad_y.device}")
    return _like(grad_y, x)


def stats(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of x [N, c, H, W] over N, H, W, both float32 [c]."""
    _check("bn_act.stats", x)
    x = _dense(x)
    C = x.shape[1]
    mean = torch.empty(C, dtype=torch.float32, device=x.device)
    var = torch.empty(C, dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        return mean.fill_(float("nan")), var.fill_(float("nan"))  # the statistics of nothing
    rows, C, HW, bc, bn, bhw, per, chunks, c_blocks = _launch_geometry(x, reduction=True)
    part = torch.empty((2, chunks, C), dtype=torch.float32, device=x.device)
    counts = torch.empty(chunks, dtype=torch.float32, device=x.device)
    _stats_partial_kernel[(chunks, c_blocks)](x, part, counts, rows, C, HW, per,
                                              BLOCK_C=bc, BLOCK_N=bn, BLOCK_HW=bhw)
    merge_bc = min(triton.next_power_of_2(C), 1024 if _INTERPRET else 128)
    _stats_merge_kernel[(triton.cdiv(C, merge_bc),)](part, counts, mean, var, C, chunks, BLOCK_C=merge_bc)
    return mean, var


def forward(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act: int) -> torch.Tensor:
    """y = act(x * scale[c] + shift[c]) in x's dtype and memory format."""
    _check("bn_act.forward", x, scale=scale, shift=shift)
    act = _check_act("bn_act.forward", act)
    x = _dense(x)
    y = torch.empty_like(x)
    if x.numel():
        rows, C, HW, bc, bn, bhw, per, chunks, c_blocks = _launch_geometry(x, reduction=False)
        _forward_kernel[(chunks, c_blocks)](x, scale, shift, y, rows, C, HW, per, ACT=act,
                                            BLOCK_C=bc, BLOCK_N=bn, BLOCK_HW=bhw)
    return y


def backward_reduce(grad_y: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    mean: torch.Tensor, act: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sum dz, sum dz * (x - mean)) float32 [c] over N, H, W, where dz = grad_y * act'(x * scale + shift)."""
    _check("bn_act.backward_reduce", x, scale=scale, shift=shift, mean=mean)
    act = _check_act("bn_act.backward_reduce", act)
    x = _dense(x)
    grad_y = _check_grad("bn_act.backward_reduce", grad_y, x)
    C = x.shape[1]
    if x.numel() == 0:
        return (torch.zeros(C, dtype=torch.float32, device=x.device),
                torch.zeros(C, dtype=torch.float32, device=x.device))
    rows, C, HW, bc, bn, bhw, per, chunks, c_blocks = _launch_geometry(x, reduction=True)
    part = torch.empty((2, chunks, C), dtype=torch.float32, device=x.device)
    _backward_reduce_kernel[(chunks, c_blocks)](grad_y, x, scale, shift, mean, part, rows, C, HW, per, ACT=act,
                                                BLOCK_C=bc, BLOCK_N=bn, BLOCK_HW=bhw)
    sums = part.sum(1)  # a fixed-order reduction of the [2, chunks, C] partials: deterministic
    return sums[0], sums[1]


def backward_input(grad_y: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   mean: Optional[torch.Tensor], invstd: Optional[torch.Tensor], weight_c: Optional[torch.Tensor],
                   sum_dz: Optional[torch.Tensor], sum_dz_xmu: Optional[torch.Tensor], count, act: int,
                   training: bool) -> torch.Tensor:
    """grad x in x's dtype and memory format. training: weight_c * invstd * (dz - sum_dz / count
    - (x - mean) * invstd^2 * sum_dz_xmu / count); eval: dz * scale (mean ... sum_dz_xmu are unused, may be None)."""
    fn = "bn_act.backward_input"
    vectors = dict(scale=scale, shift=shift)
    if training:
        vectors.update(mean=mean, invstd=invstd, weight_c=weight_c, sum_dz=sum_dz, sum_dz_xmu=sum_dz_xmu)
        if not count > 0:
            raise ValueError(f"{fn}: count must be positive in training, got {count!r}")
    _check(fn, x, **vectors)
    act = _check_act(fn, act)
    x = _dense(x)
    grad_y = _check_grad(fn, grad_y, x)
    gx = torch.empty_like(x)
    if x.numel():
        rows, C, HW, bc, bn, bhw, per, chunks, c_blocks = _launch_geometry(x, reduction=False)
        if not training:  # unused pointers: any float32 tensor of the device
            mean = invstd = weight_c = sum_dz = sum_dz_xmu = scale
        _backward_input_kernel[(chunks, c_blocks)](
            grad_y, x, scale, shift, mean, invstd, weight_c, sum_dz, sum_dz_xmu, gx,
            1.0 / count if training else 0.0, rows, C, HW, per, ACT=act, TRAINING=bool(training),
            BLOCK_C=bc, BLOCK_N=bn, BLOCK_HW=bhw)
    return gx
