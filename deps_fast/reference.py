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
