"""Pure-PyTorch definitions of every deps_fast op: the oracle of the tests and the `torch` backend.

Nothing here is fast on purpose. Each function states the semantics the fused kernels must reproduce.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F


def center_window(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The center k x k window of a [C, 1, K, K] weight (a view: OFA's sub_filter_start_end)."""
    K = weight.shape[-1]
    start = (K - k) // 2
    return weight[..., start:start + k, start:start + k]


def transformed_kernel(weight: torch.Tensor, k: int, transforms: Optional[Mapping[int, torch.Tensor]]) -> torch.Tensor:
    """The k x k kernel a subnet uses, from the full shared weight [c, 1, K, K] (already channel-sliced).

    Without transforms: the center crop. With OFA's kernel-transform matrices (KERNEL_TRANSFORM_MODE=1)
    `transforms[t]` is a (t*t, t*t) matrix mapping the next larger size down to t: starting from K, each step
    center-crops to t, flattens, multiplies by M^T and reshapes, so 3 comes from the *transformed* 5.
    """
    K = weight.shape[-1]
    if transforms is None or k == K:
        return center_window(weight, k)
    kernel = weight
    for target in sorted((t for t in transforms if t >= k), reverse=True):
        crop = center_window(kernel, target)
        flat = crop.reshape(-1, target * target)
        kernel = F.linear(flat, transforms[target]).reshape(crop.shape)
    return kernel


def elastic_depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel_size: int,
    stride: int = 1,
    transforms: Optional[Mapping[int, torch.Tensor]] = None,
) -> torch.Tensor:
    """OFA's DynamicSeparableConv2d: slice weight[:c], take the (transformed) center k x k, pad k // 2.

    Accumulates in float32 for low-precision inputs (F.conv2d on CPU would otherwise round per tap) and
    returns x's dtype. A float32 master weight is allowed with bf16/fp16 inputs, as under autocast.
    """
    c = x.shape[1]
    kernel = transformed_kernel(weight[:c], kernel_size, transforms)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = F.conv2d(x.to(compute), kernel.to(compute), None, stride, kernel_size // 2, 1, c)
    return out.to(x.dtype)


def distillation_loss(
    student: torch.Tensor,
    teacher: Optional[torch.Tensor] = None,
    target: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    soft_weight: float = 1.0,
    hard_weight: float = 1.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The supernet loss of one subnet, per row:

        soft_weight * T^2 * sum_c -softmax(teacher / T)_c * log_softmax(student / T)_c     (if teacher given)
      + hard_weight * cross_entropy(student, target, label_smoothing)                       (if target given)

    The soft term is AlphaNet's soft cross-entropy (docs/method.md §3: in-place KD, T = 1). The teacher is a constant.
    Computed in float32 (float64 for float64 inputs); returned in float32 or float64.
    """
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student.to(compute)
    loss = s.new_zeros(s.shape[0])
    if teacher is not None:
        t = teacher.detach().to(compute)
        T = float(temperature)
        soft = -(torch.softmax(t / T, dim=-1) * torch.log_softmax(s / T, dim=-1)).sum(-1)
        loss = loss + soft_weight * T * T * soft
    if target is not None:
        hard = F.cross_entropy(s, target, reduction="none", label_smoothing=label_smoothing)
        loss = loss + hard_weight * hard
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# The activations that follow a BatchNorm in the supernets (OFA's names; "h_swish" is the models' spelling).
BN_ACTIVATIONS = ("none", "relu", "relu6", "hswish")


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """x after the activation `name` (one of BN_ACTIVATIONS, or "h_swish")."""
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name in ("hswish", "h_swish"):
        return F.hardswish(x)
    return x


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
) -> torch.Tensor:
    """OFA's DynamicBatchNorm2d followed by its activation: BatchNorm of x [N, c, H, W] with the prefixes [:c]
    of the shared weight, bias and running statistics (length C_max >= c), then the activation.

    Training normalises with the batch statistics and updates the running prefixes in place exactly as
    nn.BatchNorm2d does (running = (1 - momentum) * running + momentum * batch, the batch variance unbiased);
    eval uses the running statistics. Computed in float32 (float64 for float64 inputs), returned in x's dtype.
    """
    c = x.shape[1]
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = F.batch_norm(x.to(compute), running_mean[:c], running_var[:c], weight[:c], bias[:c], training, momentum, eps)
    return apply_activation(y, activation).to(x.dtype)
