"""Triton kernels of the elastic depthwise convolution: forward, grad input, grad weight. No autograd here.

Every kernel reads the shared supernet weight in place: `w` is the full [C_w, K, K] float32 tensor and the
kernel indexes channel c < C and the center k x k window at offset (K - k) // 2, so one compiled family
serves every (c, k) a training run samples. Sizes that change between subnets (C, H, W) are excluded from
Triton's integer specialisation (`do_not_specialize`), so a new channel count never triggers a recompile;
the compile-time constants are only the kernel size, stride, layout and block shape.

Layouts: NCHW-contiguous or channels_last (NHWC in memory), chosen by the constexpr CHANNELS_LAST; the
caller makes tensors contiguous in one of the two. Tiles are [BLOCK_C channels, BLOCK_P output pixels];
pixels are the fast axis for NCHW and channels for NHWC, which the wrappers pick through block shapes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from deps_fast._util import triton_interpreting

_INTERPRET = triton_interpreting()  # fixed when the kernels are defined, as Triton itself is

# Test hooks (None in real use): a fixed [BLOCK_C, BLOCK_P] tile shape and a weight-gradient program target, so
# the CPU interpreter runs the multi-tile and multi-chunk paths a GPU takes (tests set them via monkeypatch).
BLOCKS_OVERRIDE: tuple[int, int] | None = None
TARGET_PROGRAMS_OVERRIDE: int | None = None


@triton.jit
def _offsets(n, c, h, w, C, H, W, CHANNELS_LAST: tl.constexpr):
    # n is int64, so every product below is computed in 64 bits.
    if CHANNELS_LAST:
        return ((n * H + h) * W + w) * C + c
    else:
        return ((n * C + c) * H + h) * W + w


@triton.jit
def _tile(C, NP, PW, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's [BLOCK_C, BLOCK_P] tile of a plane of NP pixels, PW wide: (n, c, c_ok, row, col, p_ok)."""
    n = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    return n, c, c < C, p // PW, p % PW, p < NP


@triton.jit
def _window(w_ptr, c, K, KS: tl.constexpr):
    """Pointers to tap (0, 0) of the center KS x KS window of each channel's K x K weight."""
    return w_ptr + c * (K * K) + ((K - KS) // 2) * (K + 1)


@triton.jit
def _source(d, tap, STRIDE: tl.constexpr, PAD: tl.constexpr, LIMIT, TRANSPOSED: tl.constexpr):
    """Row (or column) of the source plane that tap `tap` of destination row `d` reads, and whether it exists.
    Forward: src = d * STRIDE - PAD + tap. Transposed (grad input from grad output): the output row o with
    o * STRIDE = d + PAD - tap, if that is a whole number."""
    if TRANSPOSED:
        t = d + PAD - tap
        src = t // STRIDE
        return src, (t >= 0) & (src * STRIDE == t) & (src < LIMIT)
    else:
        src = d * STRIDE - PAD + tap
        return src, (src >= 0) & (src < LIMIT)


@triton.jit(do_not_specialize=["C", "SH", "SW", "DH", "DW", "K"])
def _dwconv_taps_kernel(
    src_ptr, w_ptr, dst_ptr, C, SH, SW, DH, DW, K,
    KS: tl.constexpr, STRIDE: tl.constexpr, TRANSPOSED: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # dst[d] = sum over taps (i, j) of src[source(d, i, j)] * w[i, j]: the forward (x -> y) and, transposed,
    # the input gradient (grad_y -> grad_x) are the same gather with another index rule.
    n, c, c_ok, dh, dw, p_ok = _tile(C, DH * DW, DW, BLOCK_C, BLOCK_P)
    w_base = _window(w_ptr, c, K, KS)
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for i in tl.static_range(KS):
        sh, h_ok = _source(dh, i, STRIDE, KS // 2, SH, TRANSPOSED)
        for j in tl.static_range(KS):
            sw, w_ok = _source(dw, j, STRIDE, KS // 2, SW, TRANSPOSED)
            ok = p_ok & h_ok & w_ok
            offs = _offsets(n, c[:, None], sh[None, :], sw[None, :], C, SH, SW, CHANNELS_LAST)
            sv = tl.load(src_ptr + offs, mask=c_ok[:, None] & ok[None, :], other=0.0).to(tl.float32)
            wv = tl.load(w_base + i * K + j, mask=c_ok, other=0.0)
            acc += sv * wv[:, None]
    d_offs = _offsets(n, c[:, None], dh[None, :], dw[None, :], C, DH, DW, CHANNELS_LAST)
    tl.store(dst_ptr + d_offs, acc.to(dst_ptr.dtype.element_ty), mask=c_ok[:, None] & p_ok[None, :])


@triton.jit(do_not_specialize=["C", "H", "W", "OH", "OW", "P_PER_CHUNK"])
def _dwconv_bwd_weight_kernel(
    gy_ptr, x_ptr, out_ptr, C, H, W, OH, OW, N, P_PER_CHUNK,
    KS: tl.constexpr, STRIDE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One program: one tap (i, j), BLOCK_C channels, one chunk of the N * OH * OW output pixels.
    # Deterministic mode writes a float32 partial per chunk to out[chunk, c, tap] (summed afterwards in a fixed
    # order); ATOMIC mode adds it into out[c, tap] with float32 atomics.
    pid_chunk = tl.program_id(0)
    pid_c = tl.program_id(1)
    tap = tl.program_id(2)
    i = tap // KS
    j = tap % KS
    pad: tl.constexpr = KS // 2
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    total = N * OH * OW
    start = pid_chunk.to(tl.int64) * P_PER_CHUNK
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for p0 in range(0, P_PER_CHUNK, BLOCK_P):
        p = start + p0 + tl.arange(0, BLOCK_P)
        p_ok = p < total
        n = p // (OH * OW)
        rem = p % (OH * OW)
        oh = rem // OW
        ow = rem % OW
        ih = oh * STRIDE - pad + i
        iw = ow * STRIDE - pad + j
        x_ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        g_offs = _offsets(n[None, :], c[:, None], oh[None, :], ow[None, :], C, OH, OW, CHANNELS_LAST)
        x_offs = _offsets(n[None, :], c[:, None], ih[None, :], iw[None, :], C, H, W, CHANNELS_LAST)
        gv = tl.load(gy_ptr + g_offs, mask=c_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
        xv = tl.load(x_ptr + x_offs, mask=c_ok[:, None] & x_ok[None, :], other=0.0).to(tl.float32)
        acc += gv * xv
    part = tl.sum(acc, axis=1)
    if ATOMIC:
        tl.atomic_add(out_ptr + c * (KS * KS) + tap, part, mask=c_ok)
    else:
        tl.store(out_ptr + (pid_chunk * C + c) * (KS * KS) + tap, part, mask=c_ok)


def _out_size(size: int, k: int, stride: int) -> int:
    return (size + 2 * (k // 2) - k) // stride + 1


def _blocks(C: int, pixels: int, channels_last: bool) -> tuple[int, int]:
    """Tile shape [BLOCK_C, BLOCK_P]: the contiguous axis gets the long side (coalesced loads)."""
    if BLOCKS_OVERRIDE is not None:
        return BLOCKS_OVERRIDE
    if _INTERPRET:  # the interpreter pays per program and per op, not per element: few, large tiles
        block_c = min(128, triton.next_power_of_2(C))
        return block_c, min(triton.next_power_of_2(pixels), max(16, 16384 // block_c))
    if channels_last:
        block_c = min(64, max(16, triton.next_power_of_2(C)))
        return block_c, 2048 // block_c
    return 2, min(512, max(64, triton.next_power_of_2(pixels)))


def _contiguous(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _empty(shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _taps(src: torch.Tensor, w: torch.Tensor, k: int, stride: int, dst_hw: tuple, transposed: bool,
          channels_last: bool) -> torch.Tensor:
    N, C, SH, SW = src.shape
    DH, DW = dst_hw
    src = _contiguous(src, channels_last)
    dst = _empty((N, C, DH, DW), src, channels_last)
    bc, bp = _blocks(C, DH * DW, channels_last)
    grid = (triton.cdiv(DH * DW, bp), triton.cdiv(C, bc), N)
    _dwconv_taps_kernel[grid](src, w, dst, C, SH, SW, DH, DW, w.shape[-1], KS=k, STRIDE=stride, TRANSPOSED=transposed,
                              CHANNELS_LAST=channels_last, BLOCK_C=bc, BLOCK_P=bp)
    return dst


def forward(x: torch.Tensor, w: torch.Tensor, k: int, stride: int, channels_last: bool) -> torch.Tensor:
    """x [N, C, H, W]; w [C_w, K, K] float32 contiguous. Returns [N, C, OH, OW] in x's dtype and layout."""
    H, W = x.shape[-2:]
    return _taps(x, w, k, stride, (_out_size(H, k, stride), _out_size(W, k, stride)), False, channels_last)


def backward_input(gy: torch.Tensor, w: torch.Tensor, k: int, stride: int, H: int, W: int,
                   channels_last: bool) -> torch.Tensor:
    """grad_y [N, C, OH, OW] -> grad_x [N, C, H, W] in grad_y's dtype and layout."""
    return _taps(gy, w, k, stride, (H, W), True, channels_last)


def _target_programs(device: torch.device) -> int:
    if TARGET_PROGRAMS_OVERRIDE is not None:
        return TARGET_PROGRAMS_OVERRIDE
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def backward_weight(gy: torch.Tensor, x: torch.Tensor, k: int, stride: int, channels_last: bool,
                    deterministic: bool = True) -> torch.Tensor:
    """The window's weight gradient [C, k, k] float32, reduced over N, OH, OW."""
    N, C, H, W = x.shape
    OH, OW = gy.shape[-2:]
    gy = _contiguous(gy, channels_last)
    x = _contiguous(x, channels_last)
    bc, bp = _blocks(C, OH * OW, channels_last)
    total = N * OH * OW
    c_blocks = triton.cdiv(C, bc)
    # Enough chunks to fill the device, never smaller than one tile; the chunking depends only on the
    # shapes and the device, so deterministic mode sums the same partials in the same order every run.
    chunks = max(1, min(triton.cdiv(total, bp), triton.cdiv(_target_programs(x.device), c_blocks * k * k)))
    per_chunk = triton.cdiv(triton.cdiv(total, chunks), bp) * bp
    chunks = triton.cdiv(total, per_chunk)
    if deterministic:
        out = torch.empty((chunks, C, k * k), dtype=torch.float32, device=x.device)
    else:
        out = torch.zeros((C, k * k), dtype=torch.float32, device=x.device)
    grid = (chunks, c_blocks, k * k)
    _dwconv_bwd_weight_kernel[grid](gy, x, out, C, H, W, OH, OW, N, per_chunk, KS=k, STRIDE=stride,
                                    CHANNELS_LAST=channels_last, ATOMIC=not deterministic,
                                    BLOCK_C=bc, BLOCK_P=bp)
    if deterministic:
        out = out.sum(0)
    return out.view(C, k, k)
