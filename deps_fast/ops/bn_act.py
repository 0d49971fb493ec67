"""elastic_batch_norm_act: OFA's DynamicBatchNorm2d and the activation after it as one fused op.

BatchNorm of x [N, c, H, W] with the prefixes [:c] of a shared BN's tensors (length C_max >= c). Two custom
ops registered with torch.library, each with a fake implementation: the forward (batch statistics in
training, then one pass y = act(x * scale + shift)) and the backward (the two per-channel reductions of the
activation-and-BN gradient, then one pass writing grad x). The running statistics are updated in place
outside the custom op, with nn.BatchNorm2d's formula. The `torch` backend runs deps_fast.reference instead.

Every kernel backend provides the same four functions (Triton: deps_fast.kernels.bn_act.<name>; C++/CUDA:
deps_fast._C.bn_act_<name>_cpu / _cuda), with x and the gradients in any of float32 / bfloat16 / float16,
NCHW or channels_last, and scale / shift / mean / invstd float32 [c]:
  stats(x) -> (mean, biased var)
  forward(x, scale, shift, act) -> act(x * scale + shift)
  backward_reduce(grad_y, x, scale, shift, mean, act) -> (sum dz, sum dz * (x - mean)),  dz = grad_y * act'(z)
  backward_input(grad_y, x, scale, shift, mean, invstd, weight_c, sum_dz, sum_dz_xmu, count, act, training)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from deps_fast import _ext, _validate, reference
from deps_fast.ops import _backend

# Activation codes shared with the kernels; "h_swish" (the models' spelling) is accepted for "hswish".
ACTIVATION_CODES = {"none": 0, "relu": 1, "relu6": 2, "hswish": 3}
_ALIASES = {"h_swish": "hswish"}
_KERNEL_FUNCTIONS = ("stats", "forward", "backward_reduce", "backward_input")


# ---- validation --------------------------------------------------------------------------------------------
def _check_inputs(x, weight, bias, running_mean, running_var, training, momentum, eps, activation) -> str:
    """Validate every argument; returns the canonical activation name."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, c, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in _backend.FAST_DTYPES + (torch.float64,):
        raise TypeError(f"x.dtype must be one of float32, bfloat16, float16 (float64: torch backend), got {x.dtype}")
    param_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    C_max = None
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [C_max], got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D [C_max], got shape {tuple(t.shape)}")
        C_max = t.shape[0] if C_max is None else C_max
        if t.shape[0] != C_max:
            raise ValueError(f"{name} has {t.shape[0]} entries but weight has {C_max}; all four BN tensors must "
                             "have one length C_max")
        if t.dtype != param_dtype:
            raise TypeError(f"{name}.dtype must be {param_dtype} for x of dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; all tensors must be on one device")
    N, c, H, W = x.shape
    if c < 1 or c > C_max:
        raise ValueError(f"x has c={c} channels; allowed 1 <= c <= C_max={C_max} (weight.shape[0])")
    training = _validate.boolean("training", training)
    if momentum is None:
        raise ValueError("momentum=None (nn.BatchNorm2d's cumulative average) is not supported: pass the factor "
                         "1 / num_batches_tracked as momentum instead")
    _validate.fraction("momentum", momentum, include_one=True)
    _validate.positive("eps", eps)
    if isinstance(activation, str):
        activation = _ALIASES.get(activation, activation)
    _validate.one_of("activation", activation, tuple(ACTIVATION_CODES))
    if training and N * H * W == 1:
        raise ValueError(f"training needs more than one value per channel, got x of shape {tuple(x.shape)}")
    return activation


def _channels_last(x: torch.Tensor) -> bool:
    """One rule for real and fake outputs: channels_last only when x is unambiguously NHWC in memory."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when NCHW- or channels_last-contiguous (what the kernels take), else an NCHW copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _like_x(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if _channels_last(x) else torch.contiguous_format)


# ---- backend implementations (no autograd) -----------------------------------------------------------------
class _Kernels(NamedTuple):
    stats: Callable
    forward: Callable
    backward_reduce: Callable
    backward_input: Callable


def _kernels(backend: str) -> _Kernels:
    if backend == "triton":
        module = _backend.triton_kernels()["bn_act"]
        return _Kernels(*(getattr(module, f) for f in _KERNEL_FUNCTIONS))
    suffix = "_cuda" if backend == "cuda" else "_cpu"
    ext = _ext.extension()
    return _Kernels(*(getattr(ext, f"bn_act_{f}{suffix}") for f in _KERNEL_FUNCTIONS))


def _scale_shift(weight, bias, mean, invstd, c):
    w = weight[:c].float()
    scale = w * invstd
    return w, scale, bias[:c].float() - mean * scale


# ---- custom ops --------------------------------------------------------------------------------------------
@torch.library.custom_op("deps_fast::bn_act_fwd", mutates_args=())
def bn_act_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
               running_var: torch.Tensor, training: bool, eps: float, act: int,
               backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, invstd, var), the last three float32 [c]: the batch's (var biased) in training, the running
    statistics' in eval. The running statistics are read only."""
    c = x.shape[1]
    kernels = _kernels(backend)
    if training:
        mean, var = kernels.stats(x)
    else:
        mean, var = running_mean[:c].float().clone(), running_var[:c].float().clone()
    invstd = torch.sqrt(var + eps).reciprocal()  # 1 / sqrt rounded as ATen's batch_norm does it
    _, scale, shift = _scale_shift(weight, bias, mean, invstd, c)
    return kernels.forward(x, scale, shift, act), mean, invstd, var


@bn_act_fwd.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps, act, backend):
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    c = x.shape[1]
    stat = lambda: x.new_empty((c,), dtype=torch.float32)  # noqa: E731
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt), stat(), stat(), stat()


@torch.library.custom_op("deps_fast::bn_act_bwd", mutates_args=())
def bn_act_bwd(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               mean: torch.Tensor, invstd: torch.Tensor, training: bool, act: int, backend: str,
               param_grads: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad x, grad weight, grad bias); the parameter gradients have the full length C_max, zero beyond c
    (and zero everywhere when param_grads is False, which in eval skips the reduction pass)."""
    N, c, H, W = x.shape
    kernels = _kernels(backend)
    w, scale, shift = _scale_shift(weight, bias, mean, invstd, c)
    if training or param_grads:
        sum_dz, sum_dz_xmu = kernels.backward_reduce(grad_y, x, scale, shift, mean, act)
    else:
        sum_dz = sum_dz_xmu = torch.zeros_like(mean)
    grad_x = kernels.backward_input(grad_y, x, scale, shift, mean, invstd, w, sum_dz, sum_dz_xmu, N * H * W, act,
                                    training)
    pad = (0, weight.shape[0] - c)
    if not param_grads:
        return grad_x, torch.zeros_like(weight), torch.zeros_like(bias)
    return grad_x, F.pad(sum_dz_xmu * invstd, pad).to(weight.dtype), F.pad(sum_dz, pad).to(bias.dtype)


@bn_act_bwd.register_fake
def _(grad_y, x, weight, bias, mean, invstd, training, act, backend, param_grads):
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt), torch.empty_like(weight),
            torch.empty_like(bias))


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, _, training, _, act, backend = inputs
    _, mean, invstd, _ = output
    ctx.save_for_backward(x, weight, bias, mean, invstd)
    ctx.conf = (training, act, backend)


def _backward(ctx, grad_y, _grad_mean, _grad_invstd, _grad_var):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    training, act, backend = ctx.conf
    if torch.is_grad_enabled() and grad_y.requires_grad:
        raise RuntimeError("elastic_batch_norm_act: double backward (create_graph=True) is not supported by the "
                           "fused backends; use backend='torch' for higher-order gradients")
    param_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    grad_x, grad_w, grad_b = bn_act_bwd(_like_x(grad_y, x), x, weight, bias, mean, invstd, training, act,
                                        backend, param_grads)
    return (grad_x if ctx.needs_input_grad[0] else None, grad_w if ctx.needs_input_grad[1] else None,
            grad_b if ctx.needs_input_grad[2] else None, None, None, None, None, None, None)


bn_act_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---- public API --------------------------------------------------------------------------------------------
def missing_kernels(backend: str) -> str | None:
    """Why `backend` has no kernels of this op in this build (None if it has them, or for "torch" / "auto")."""
    return _backend.op_kernels_reason(backend, "bn_act", _KERNEL_FUNCTIONS,
                                      tuple(f"bn_act_{f}" for f in _KERNEL_FUNCTIONS))


def _input_reason(x: torch.Tensor) -> Callable[[str], str | None]:
    dtype_reason = _backend.kernel_input_reason("x", x, x.numel() == 0)

    def reason(backend: str):
        return dtype_reason(backend) or missing_kernels(backend)
    return reason


def elastic_batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    activation: str = "none",
    backend: str = "auto",
) -> torch.Tensor:
    """BatchNorm over the first c channels of a shared BN, fused with the activation after it.

    Args:
        x: [N, c, H, W] float32 / bfloat16 / float16 (float64 on the torch backend), NCHW or channels_last.
        weight, bias, running_mean, running_var: the shared BN tensors [C_max], C_max >= c, float32 (float64
            for float64 x); the prefixes [:c] are used in place.
        training: normalise with the batch statistics (per channel over N, H, W, in float32) and update the
            running prefixes in place as nn.BatchNorm2d does (unbiased variance); False: the running statistics.
        momentum: the running-average factor in [0, 1]; 0 leaves the running statistics as they are (BN
            recalibration). nn.BatchNorm2d's momentum=None is not supported: pass 1 / num_batches_tracked.
        eps: added to the variance, > 0.
        activation: "none", "relu", "relu6" or "hswish" ("h_swish" accepted), with torch's gradient at the kinks.
        backend: "auto", "cuda", "triton", "cpp" or "torch" (see deps_fast.ops.available_backends()).

    Returns act(BN(x)) in x's dtype and memory format. Gradients flow to x, weight and bias (zero beyond c).
    """
    activation = _check_inputs(x, weight, bias, running_mean, running_var, training, momentum, eps, activation)
    if x.device.type == "cpu" and _backend.requested(backend) == "auto":
        # This op's auto rule on CPU: the torch composition. Measured at the demo's BN shapes, the cpp kernels
        # are slower than eager forward+backward (0.78x, bench/results/bn-act-cpu-*.json), so auto does not pick
        # them until they win; an explicit "cpp" (or DEPS_FAST_BACKEND=cpp) still runs them.
        backend = "torch"
    name = _backend.resolve(backend, x.device, _input_reason(x))
    if name == "torch":
        return reference.elastic_batch_norm_act(x, weight, bias, running_mean, running_var, training=training,
                                                momentum=momentum, eps=eps, activation=activation)
    y, mean, _, var = bn_act_fwd(_dense(x), weight, bias, running_mean, running_var, training, float(eps),
                                 ACTIVATION_CODES[activation], name)
    if training:
        N, c, H, W = x.shape
        n = N * H * W
        with torch.no_grad():  # nn.BatchNorm2d's update: (1 - momentum) * running + momentum * batch
            running_mean[:c].mul_(1.0 - momentum).add_(mean, alpha=momentum)
            running_var[:c].mul_(1.0 - momentum).add_(var, alpha=momentum * n / (n - 1))
    return y
