"""elastic_depthwise_conv2d: OFA's dynamic depthwise convolution as one fused op.

Three custom ops (forward, grad input, grad weight) registered with torch.library carry a fake
implementation each, so torch.compile and opcheck see through them; the autograd formula of the forward
calls the other two. The `torch` backend skips the custom ops and runs deps_fast.reference directly.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F

from deps_fast import _ext, _validate, reference
from deps_fast.ops import _backend

# ---- validation --------------------------------------------------------------------------------------------
def _check_inputs(x, weight, kernel_size, stride, transforms) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, c, H, W], got shape {tuple(x.shape)}")
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError(f"weight must be [C_max, 1, K, K] with K odd, got shape {tuple(weight.shape)}")
    allowed = _backend.FAST_DTYPES + (torch.float64,)
    if x.dtype not in allowed:
        raise TypeError(f"x.dtype must be one of float32, bfloat16, float16 (float64: torch backend), got {x.dtype}")
    if weight.dtype != x.dtype and weight.dtype != torch.float32:
        raise TypeError(f"weight.dtype must equal x.dtype ({x.dtype}) or be float32 (a master weight), "
                        f"got {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}; both must be on one device")
    N, c, H, W = x.shape
    C_max, K = weight.shape[0], weight.shape[-1]
    if c < 1 or c > C_max:
        raise ValueError(f"x has c={c} channels; allowed 1 <= c <= C_max={C_max} (weight.shape[0])")
    if H < 1 or W < 1:
        raise ValueError(f"x must have H, W >= 1, got H={H}, W={W}")
    k = _validate.integer("kernel_size", kernel_size, allowed=f"odd, 1..{K}")
    if k < 1 or k % 2 == 0 or k > K:
        raise ValueError(f"kernel_size must be odd and between 1 and K={K} (the weight's size), got {k}")
    s = _validate.integer("stride", stride, allowed="1 or 2")
    if s not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {s}")
    if transforms is None:
        return
    if not isinstance(transforms, Mapping):
        raise TypeError("transforms must be None or a mapping {target kernel size: (t*t, t*t) matrix}, "
                        f"got {type(transforms).__name__}")
    for t, m in transforms.items():
        _validate.integer("transforms key", t, allowed=f"odd, < K={K}")
        if t % 2 == 0 or not 1 <= t < K:
            raise ValueError(f"transforms key must be an odd kernel size below K={K}, got {t}")
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (t * t, t * t):
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"transforms[{t}] must be a ({t * t}, {t * t}) tensor, got {shape}")
        if m.device != weight.device:
            raise ValueError(f"transforms[{t}] is on {m.device} but weight is on {weight.device}")
        if m.dtype != weight.dtype:
            raise ValueError(f"transforms[{t}] dtype {m.dtype} must equal weight.dtype {weight.dtype}")
    if k != K and k not in transforms:
        raise ValueError(f"transforms has no matrix for kernel_size={k} (keys: {sorted(transforms)}); "
                         f"the chain from K={K} must end at kernel_size")


def _channels_last(x: torch.Tensor) -> bool:
    """One rule for real and fake outputs: channels_last only when x is unambiguously NHWC in memory."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# ---- backend implementations (no autograd) -----------------------------------------------------------------
def _w3(weight: torch.Tensor) -> torch.Tensor:
    # [C_w, 1, K, K] -> [C_w, K, K] float32; a view (no copy) for the usual float32 contiguous parameter.
    return weight.reshape(weight.shape[0], weight.shape[-2], weight.shape[-1]).float().contiguous()


def _fmt(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _run_forward(backend, x, weight, k, stride):
    cl = _channels_last(x)
    if backend == "triton":
        tk = _backend.triton_kernels()["depthwise"]
        return tk.forward(x, _w3(weight), k, stride, cl)
    fn = _ext.extension().dwconv_forward_cuda if backend == "cuda" else _ext.extension().dwconv_forward_cpu
    # the kernels take either layout natively (cpp: small NCHW planes too), so no layout copy happens here
    return _fmt(fn(_fmt(x, cl), _w3(weight), k, stride), cl)


def _run_backward_input(backend, gy, weight, k, stride, H, W, cl):
    if backend == "triton":
        tk = _backend.triton_kernels()["depthwise"]
        return tk.backward_input(gy, _w3(weight), k, stride, H, W, cl)
    fn = _ext.extension().dwconv_backward_input_cuda if backend == "cuda" \
        else _ext.extension().dwconv_backward_input_cpu
    return _fmt(fn(_fmt(gy, cl), _w3(weight), k, stride, H, W), cl)


def _run_backward_weight(backend, gy, x, k, stride, deterministic):
    cl = _channels_last(x)
    if backend == "triton":
        tk = _backend.triton_kernels()["depthwise"]
        return tk.backward_weight(gy, x, k, stride, cl, deterministic)
    gy, x = _fmt(gy, cl), _fmt(x, cl)
    if backend == "cuda":
        return _ext.extension().dwconv_backward_weight_cuda(gy, x, k, stride, deterministic)
    return _ext.extension().dwconv_backward_weight_cpu(gy, x, k, stride)


def _empty_like_layout(t: torch.Tensor, shape, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=fmt)


def _out_hw(H: int, W: int, k: int, stride: int) -> tuple[int, int]:
    pad = k // 2
    return (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1


# ---- custom ops --------------------------------------------------------------------------------------------
@torch.library.custom_op("deps_fast::dwconv_fwd", mutates_args=())
def dwconv_fwd(x: torch.Tensor, weight: torch.Tensor, k: int, stride: int, backend: str,
               deterministic: bool) -> torch.Tensor:
    """Depthwise conv of x [N, c, H, W] with the center k x k of weight[:c] ([C_w, 1, K, K]); pad k // 2."""
    return _run_forward(backend, x, weight, k, stride)


@dwconv_fwd.register_fake
def _(x, weight, k, stride, backend, deterministic):
    N, c, H, W = x.shape
    return _empty_like_layout(x, (N, c) + _out_hw(H, W, k, stride), _channels_last(x))


@torch.library.custom_op("deps_fast::dwconv_bwd_input", mutates_args=())
def dwconv_bwd_input(grad_out: torch.Tensor, weight: torch.Tensor, k: int, stride: int, H: int, W: int,
                     channels_last: bool, backend: str) -> torch.Tensor:
    return _run_backward_input(backend, grad_out, weight, k, stride, H, W, channels_last)


@dwconv_bwd_input.register_fake
def _(grad_out, weight, k, stride, H, W, channels_last, backend):
    return _empty_like_layout(grad_out, (grad_out.shape[0], grad_out.shape[1], H, W), channels_last)


@torch.library.custom_op("deps_fast::dwconv_bwd_weight", mutates_args=())
def dwconv_bwd_weight(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, k: int, stride: int,
                      backend: str, deterministic: bool) -> torch.Tensor:
    """Gradient for the whole weight [C_w, 1, K, K]: the used slice and window filled, zero elsewhere."""
    window = _run_backward_weight(backend, grad_out, x, k, stride, deterministic)
    c, K = x.shape[1], weight.shape[-1]
    o = (K - k) // 2
    # Pad the [c, k, k] window out to [C_w, K, K]: no full-size scatter, and zero outside by construction.
    full = F.pad(window, (o, o, o, o, 0, weight.shape[0] - c))
    return full.view(weight.shape).to(weight.dtype)


@dwconv_bwd_weight.register_fake
def _(grad_out, x, weight, k, stride, backend, deterministic):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, weight, k, stride, backend, deterministic = inputs
    ctx.save_for_backward(x, weight)
    ctx.conf = (k, stride, backend, deterministic, _channels_last(x))


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    k, stride, backend, deterministic, cl = ctx.conf
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = dwconv_bwd_input(grad_out, weight, k, stride, x.shape[2], x.shape[3], cl, backend)
    if ctx.needs_input_grad[1]:
        grad_w = dwconv_bwd_weight(grad_out, x, weight, k, stride, backend, deterministic)
    return grad_x, grad_w, None, None, None, None


dwconv_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---- public API --------------------------------------------------------------------------------------------
def elastic_depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel_size: int,
    stride: int = 1,
    transforms: Optional[Mapping[int, torch.Tensor]] = None,
    backend: str = "auto",
    deterministic: bool = True,
) -> torch.Tensor:
    """Depthwise convolution with a slice of one shared supernet weight (OFA's DynamicSeparableConv2d).

    Args:
        x: [N, c, H, W] float32 / bfloat16 / float16 (float64 on the torch backend), NCHW or channels_last.
        weight: the full shared weight [C_max, 1, K, K], K odd; only weight[:c] is used. Either x's dtype or
            float32 (a master weight read in place, as under autocast).
        kernel_size: odd k <= K: the center k x k window, padding k // 2.
        stride: 1 or 2.
        transforms: OFA kernel-transform matrices {t: (t*t, t*t)}, e.g. {5: M75, 3: M53} for K = 7; the k x k
            kernel is then derived from the transformed next-larger kernel (3 from the transformed 5).
        backend: "auto", "cuda", "triton", "cpp" or "torch" (see deps_fast.ops.available_backends()).
        deterministic: reduce the weight gradient in a fixed order (default); False allows float32 atomics on
            the GPU backends, faster but not bitwise reproducible.

    Returns [N, c, H', W'] in x's dtype and memory format, accumulated in float32. Gradients flow to x, to the
    used slice and window of weight (zero elsewhere) and to the transforms.
    """
    _check_inputs(x, weight, kernel_size, stride, transforms)
    deterministic = _validate.boolean("deterministic", deterministic)
    name = _backend.resolve(backend, x.device, _backend.kernel_input_reason("x", x, x.numel() == 0))
    if name == "torch":
        return reference.elastic_depthwise_conv2d(x, weight, kernel_size, stride, transforms)
    if transforms is not None and kernel_size != weight.shape[-1]:
        # A tiny [c, k*k] x [k*k, k*k] product per call; autograd carries its gradient to weight and transforms.
        weight = reference.transformed_kernel(weight[: x.shape[1]], kernel_size, transforms)
    return dwconv_fwd(x, weight, kernel_size, stride, name, deterministic)
