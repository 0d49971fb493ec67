"""Elastic layers: every subnet reads prefixes (views) of one set of shared tensors; nothing is copied.

Each layer takes the active channel counts at call time, so which subnet runs is decided by the forward
arguments alone, never by state stored in the modules.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from deps_fast.models.config import make_divisible
from deps_fast.ops import elastic_batch_norm_act, elastic_depthwise_conv2d

ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "h_swish": F.hardswish, "none": None}


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    fn = ACTIVATIONS[name]
    return x if fn is None else fn(x)


class ElasticPointwise(nn.Module):
    """1x1 convolution over the first `x.shape[1]` inputs producing the first `out_channels` outputs."""

    def __init__(self, in_max: int, out_max: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_max, in_max, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_max)) if bias else None

    def forward(self, x: torch.Tensor, out_channels: Optional[int] = None) -> torch.Tensor:
        out = self.weight.shape[0] if out_channels is None else out_channels
        bias = None if self.bias is None else self.bias[:out]
        return F.conv2d(x, self.weight[:out, : x.shape[1]], bias)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first c channels, fused with the activation after it (the elastic_batch_norm_act op):
    weight, bias and running statistics are prefix views, so training updates the shared running statistics in
    place (OFA's DynamicBatchNorm2d). Still an nn.BatchNorm2d with its parameters and buffers, so checkpoints,
    OFA import, extraction and BN recalibration (forward pre-hooks, momentum 0) see a plain BatchNorm."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = "auto"  # of the fused op; Supernet.set_backend sets it with the depthwise convs'

    def forward(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        if not (self.affine and self.track_running_stats):  # not a supernet BN: nn.BatchNorm2d, full width only
            if x.shape[1] != self.num_features:
                raise ValueError(f"ElasticBatchNorm2d(affine={self.affine}, track_running_stats="
                                 f"{self.track_running_stats}) runs only at its full width {self.num_features}, "
                                 f"got x with {x.shape[1]} channels")
            return activate(super().forward(x), activation)
        factor = 0.0
        if self.training:  # nn.BatchNorm2d's bookkeeping, for every width (OFA's bn_forward does the same)
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return elastic_batch_norm_act(x, self.weight, self.bias, self.running_mean, self.running_var,
                                      training=self.training, momentum=factor, eps=self.eps, activation=activation,
                                      backend=getattr(self, "backend", "auto"))


class ElasticDepthwise(nn.Module):
    """OFA's DynamicSeparableConv2d on the fused op: one [C, 1, K, K] weight plus the kernel-transform
    matrices (identity at init, trained), e.g. 7->5 (25x25) and 5->3 (9x9) for K = 7."""

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], stride: int):
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        K = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, K, K))
        self.transforms = nn.ParameterDict(
            {str(t): nn.Parameter(torch.eye(t * t)) for t in self.kernel_sizes[:-1]})
        self.backend = "auto"

    def transform_map(self) -> Optional[dict[int, torch.Tensor]]:
        return {int(t): m for t, m in self.transforms.items()} or None

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        return elastic_depthwise_conv2d(x, self.weight, kernel_size, self.stride, self.transform_map(),
                                        backend=self.backend)


def se_width(channels: int) -> int:
    """Squeeze-excite width of OFA's DynamicSE for `channels` active channels (reduction 4)."""
    return make_divisible(channels // 4, 8)


class ElasticSE(nn.Module):
    """Squeeze-excite: mean-pool -> 1x1 (bias) -> ReLU -> 1x1 (bias) -> h-sigmoid -> multiply, sliced to the
    active channels and to se_width(active channels)."""

    def __init__(self, channels_max: int):
        super().__init__()
        mid = se_width(channels_max)
        self.reduce = ElasticPointwise(channels_max, mid, bias=True)
        self.expand = ElasticPointwise(mid, channels_max, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(self.reduce(s, se_width(c)))
        s = F.hardsigmoid(self.expand(s, c))
        return x * s


class ElasticMBConv(nn.Module):
    """MBConv: 1x1 expand (BN, act) -> kxk depthwise (BN, act) -> SE -> 1x1 project (BN). Elastic in kernel
    size and expand ratio; the middle width is make_divisible(round(in * e), 8). A block built with expand
    ratios (1,) has no expand conv (the fixed first block)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str, use_se: bool,
                 kernel_sizes: tuple[int, ...], expand_ratios: tuple[int, ...], residual: bool):
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.act = in_ch, out_ch, stride, act
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.residual = residual
        mid_max = self.middle_channels(self.expand_ratios[-1])
        self.has_expand = self.expand_ratios != (1,)
        if self.has_expand:
            self.expand = ElasticPointwise(in_ch, mid_max)
            self.expand_bn = ElasticBatchNorm2d(mid_max)
        self.depthwise = ElasticDepthwise(mid_max, self.kernel_sizes, stride)
        self.dw_bn = ElasticBatchNorm2d(mid_max)
        self.se = ElasticSE(mid_max) if use_se else None
        self.project = ElasticPointwise(mid_max, out_ch)
        self.project_bn = ElasticBatchNorm2d(out_ch)

    def middle_channels(self, expand_ratio: int) -> int:
        return self.in_ch if expand_ratio == 1 else make_divisible(round(self.in_ch * expand_ratio), 8)

    def forward(self, x: torch.Tensor, kernel_size: int, expand_ratio: int) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.expand_bn(self.expand(h, self.middle_channels(expand_ratio)), self.act)
        h = self.dw_bn(self.depthwise(h, kernel_size), self.act)
        if self.se is not None:
            h = self.se(h)
        h = self.project_bn(self.project(h))
        return x + h if self.residual else h


class ConvBNAct(nn.Module):
    """A fixed conv (+BN) (+activation): the stem and the head layers."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, act: str, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = ElasticBatchNorm2d(out_ch) if bn else None  # full width always; elastic for the fused op
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            return self.bn(x, self.act)
        return activate(x, self.act)


def he_fout_init(module: nn.Module, zero_init_residual: bool = False) -> None:
    """OFA's 'he_fout' init: conv weights ~ N(0, sqrt(2 / (k*k*out_channels))), BN gamma 1 / beta 0, linear
    U(-1/sqrt(in), 1/sqrt(in)) with zero bias; optionally gamma 0 on the last BN of residual blocks."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, ElasticPointwise, ElasticDepthwise)):
            w = m.weight
            fan_out = w.shape[0] * w.shape[2] * w.shape[3]
            nn.init.normal_(w, 0.0, math.sqrt(2.0 / fan_out))
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.shape[1])
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, ElasticMBConv) and m.residual:
                nn.init.zeros_(m.project_bn.weight)
