"""extract(supernet, config): a standalone network of standard torch layers equal to one subnet.

The result owns copies of the sliced weights (and BN statistics), needs no deps_fast op to run, and exports
with `torch.export` and to ONNX through it (`torch.onnx.export(..., dynamo=True)`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from deps_fast import reference
from deps_fast.models.layers import ConvBNAct, ElasticMBConv, se_width
from deps_fast.models.config import SubnetConfig

_ACT_MODULES = {"relu": nn.ReLU, "relu6": nn.ReLU6, "h_swish": nn.Hardswish, "none": nn.Identity}


def _act(name: str) -> nn.Module:
    return _ACT_MODULES[name]()


def _conv(weight: torch.Tensor, bias, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    out_ch, in_per_group, k, _ = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_ch, k, stride, k // 2, groups=groups, bias=bias is not None)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


def _bn(bn: nn.BatchNorm2d, c: int) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(c, eps=bn.eps, momentum=bn.momentum)
    out.weight.data.copy_(bn.weight[:c])
    out.bias.data.copy_(bn.bias[:c])
    out.running_mean.copy_(bn.running_mean[:c])
    out.running_var.copy_(bn.running_var[:c])
    out.num_batches_tracked.copy_(bn.num_batches_tracked)
    return out


class StaticSE(nn.Module):
    """Squeeze-excite of an extracted subnet (standard layers only)."""

    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d):
        super().__init__()
        self.reduce, self.expand = reduce, expand
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(s))))


class StaticMBConv(nn.Module):
    """One MBConv block of an extracted subnet: expand, depthwise, SE, project (+ skip)."""

    def __init__(self, expand: nn.Module, depthwise: nn.Module, se: nn.Module, project: nn.Module, residual: bool):
        super().__init__()
        self.expand, self.depthwise, self.se, self.project = expand, depthwise, se, project
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.se(self.depthwise(self.expand(x))))
        if self.residual:
            return x + h
        return h


class StaticHead(nn.Module):
    """The head of an extracted subnet: (final expand), pool, feature mix, dropout, classifier."""

    def __init__(self, before_pool: nn.Module, after_pool: nn.Module, dropout: float, classifier: nn.Linear):
        super().__init__()
        self.before_pool, self.after_pool = before_pool, after_pool
        self.dropout, self.classifier = nn.Dropout(dropout), classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.after_pool(self.before_pool(x).mean((2, 3), keepdim=True))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


class StaticSubnet(nn.Module):
    """A standalone subnet of standard torch layers (what `extract` returns); `config_json` says which."""

    def __init__(self, stem: nn.Module, blocks: nn.Sequential, head: StaticHead, config: SubnetConfig):
        super().__init__()
        self.stem, self.blocks, self.head = stem, blocks, head
        self.config_json = config.to_json()  # which subnet this is, kept with the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _static_conv_bn_act(layer: ConvBNAct) -> nn.Sequential:
    parts = [_conv(layer.conv.weight, None, layer.conv.stride[0])]
    if layer.bn is not None:
        parts.append(_bn(layer.bn, layer.bn.num_features))
    parts.append(_act(layer.act))
    return nn.Sequential(*parts)


def _static_block(block: ElasticMBConv, k: int, e: int) -> StaticMBConv:
    mid = block.middle_channels(e)
    expand: nn.Module = nn.Identity()
    if block.has_expand:
        expand = nn.Sequential(_conv(block.expand.weight[:mid, : block.in_ch], None),
                               _bn(block.expand_bn, mid), _act(block.act))
    dw = block.depthwise
    kernel = reference.transformed_kernel(dw.weight[:mid], k, dw.transform_map())
    depthwise = nn.Sequential(_conv(kernel, None, block.stride, groups=mid), _bn(block.dw_bn, mid), _act(block.act))
    se: nn.Module = nn.Identity()
    if block.se is not None:
        r, x = block.se.reduce, block.se.expand
        s = se_width(mid)
        se = StaticSE(_conv(r.weight[:s, :mid], r.bias[:s]), _conv(x.weight[:mid, :s], x.bias[:mid]))
    project = nn.Sequential(_conv(block.project.weight[:, :mid], None), _bn(block.project_bn, block.out_ch))
    return StaticMBConv(expand, depthwise, se, project, block.residual)


@torch.no_grad()
def extract(supernet, config: SubnetConfig) -> StaticSubnet:
    """The subnet `config` of `supernet` as standard layers, in the supernet's training mode."""
    supernet.validate(config)
    stem = _static_conv_bn_act(supernet.stem)
    blocks = [_static_block(supernet.first_block, 3, 1)]
    blocks += [_static_block(supernet.blocks[i], config.ks[i], config.es[i]) for i in supernet.active_blocks(config)]
    fm = _static_conv_bn_act(supernet.feature_mix)
    if supernet.space.feature_mix_after_pool:
        before = _static_conv_bn_act(supernet.final_expand) if supernet.final_expand is not None else nn.Identity()
        after = fm
    else:
        before, after = fm, nn.Identity()
    classifier = nn.Linear(supernet.classifier.in_features, supernet.classifier.out_features)
    classifier.weight.copy_(supernet.classifier.weight)
    classifier.bias.copy_(supernet.classifier.bias)
    net = StaticSubnet(stem, nn.Sequential(*blocks), StaticHead(before, after, supernet.dropout_rate, classifier),
                       config)
    ref = next(supernet.parameters())
    return net.to(device=ref.device, dtype=ref.dtype).train(supernet.training)

