"""The OFA supernets ("mbv3", "mbv3-cifar", "proxyless") as one elastic network class.

A space is a small table (`SPACES`); `Supernet` builds the stem, the fixed first block, the elastic stages
and the head from it. `forward(x, config)` runs the subnet `config` names; nothing else decides it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from deps_fast import _validate
from deps_fast.ops.bn_act import missing_kernels
from deps_fast.models.config import SubnetConfig, make_divisible
from deps_fast.models.layers import (ConvBNAct, ElasticBatchNorm2d, ElasticDepthwise, ElasticMBConv, he_fout_init,
                                     se_width)


@dataclass(frozen=True)
class Space:
    """The layout of one search space: widths, strides, activations and head of the OFA network it copies."""
    stem_width: int
    stem_stride: int
    stem_act: str
    first_block_width: int
    first_block_act: str
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    acts: tuple[str, ...]
    se: tuple[bool, ...]
    elastic_depth_stages: int      # stages after these hold exactly one block (proxyless's last stage)
    final_expand: Optional[int]     # mbv3: 1x1 conv + BN + h-swish before the pool
    feature_mix: int                # mbv3: 1x1 conv after the pool (no BN); proxyless: 1x1 conv + BN before it
    feature_mix_after_pool: bool
    head_act: str
    first_block_skip: bool          # OFA: mbv3's first block adds a skip when widths match, proxyless's never
    bn_eps: float                   # OFA's bn_param: 1e-5 for mbv3, 1e-3 for proxyless


_MBV3 = dict(stem_width=16, stem_act="h_swish", first_block_width=16, first_block_act="relu",
             widths=(24, 40, 80, 112, 160), acts=("relu", "relu", "h_swish", "h_swish", "h_swish"),
             se=(False, True, False, True, True), elastic_depth_stages=5, final_expand=960, feature_mix=1280,
             feature_mix_after_pool=True, head_act="h_swish", first_block_skip=True, bn_eps=1e-5)
SPACES = {
    "mbv3": Space(stem_stride=2, strides=(2, 2, 2, 1, 2), **_MBV3),
    "mbv3-cifar": Space(stem_stride=1, strides=(1, 2, 2, 1, 2), **_MBV3),
    # OFA's ProxylessNAS: the last stage is one block; its kernel and expand ratio stay elastic as in OFA.
    "proxyless": Space(stem_width=32, stem_stride=2, stem_act="relu6", first_block_width=16,
                       first_block_act="relu6", widths=(24, 40, 80, 96, 192, 320), strides=(2, 2, 2, 1, 2, 1),
                       acts=("relu6",) * 6, se=(False,) * 6, elastic_depth_stages=5, final_expand=None,
                       feature_mix=1280, feature_mix_after_pool=False, head_act="relu6", first_block_skip=False,
                       bn_eps=1e-3),
}


def _choices(name: str, values, *, odd: bool = False) -> tuple[int, ...]:
    return tuple(sorted(set(_validate.int_choices(name, values, odd=odd))))


class Supernet(nn.Module):
    """A weight-shared elastic CNN: one set of tensors from which every subnet of its space runs.

    Built from a `Space` table by `build_supernet`. `forward(x, config)` runs the subnet a `SubnetConfig` names
    (None: the max net), reading prefixes of the shared tensors in place, so which subnet runs is decided by
    the arguments alone. It also samples configs (`sample_config`, `min_config`, `max_config`), counts their
    cost (`flops`, `params`), cuts a standalone copy (`extract`) and sorts channels (`reorganize_channels`).
    """

    def __init__(self, space: str, num_classes: int, width_mult: float = 1.0, kernel_sizes=(3, 5, 7),
                 expand_ratios=(3, 4, 6), depths=(2, 3, 4), dropout: float = 0.1, in_channels: int = 3,
                 zero_init_residual: bool = False):
        super().__init__()
        _validate.one_of("name", space, sorted(SPACES))
        _validate.positive_int("num_classes", num_classes)
        _validate.positive("width_mult", width_mult)
        _validate.fraction("dropout", dropout)
        _validate.positive_int("in_channels", in_channels)
        self.space_name, self.num_classes, self.width_mult = space, num_classes, float(width_mult)
        self.kernel_sizes = _choices("kernel_sizes", kernel_sizes, odd=True)
        self.expand_ratios = _choices("expand_ratios", expand_ratios)
        self.depths = _choices("depths", depths)
        self.dropout_rate, self.in_channels = float(dropout), in_channels
        sp = self.space = SPACES[space]
        width = lambda w: make_divisible(w * self.width_mult, 8)  # noqa: E731

        self.stem = ConvBNAct(in_channels, width(sp.stem_width), 3, sp.stem_stride, sp.stem_act)
        c = width(sp.stem_width)
        fb_out = width(sp.first_block_width)
        self.first_block = ElasticMBConv(c, fb_out, 1, sp.first_block_act, False, (3,), (1,),
                                         residual=sp.first_block_skip and c == fb_out)
        c = fb_out
        blocks, self.stage_blocks = [], []
        for s, (w, stride, act, se) in enumerate(zip(sp.widths, sp.strides, sp.acts, sp.se)):
            n = self.depths[-1] if s < sp.elastic_depth_stages else 1
            self.stage_blocks.append(tuple(range(len(blocks), len(blocks) + n)))
            for i in range(n):
                out, block_stride = width(w), stride if i == 0 else 1
                # OFA's rule: an identity skip wherever shapes allow (also a stage's first block when a small
                # width_mult rounds two stage widths to the same value)
                blocks.append(ElasticMBConv(c, out, block_stride, act, se, self.kernel_sizes, self.expand_ratios,
                                            residual=block_stride == 1 and c == out))
                c = out
        self.blocks = nn.ModuleList(blocks)
        if sp.final_expand is not None:
            self.final_expand = ConvBNAct(c, width(sp.final_expand), 1, 1, sp.head_act)
            c = width(sp.final_expand)
        else:
            self.final_expand = None
        self.feature_mix = ConvBNAct(c, width(sp.feature_mix), 1, 1, sp.head_act, bn=not sp.feature_mix_after_pool)
        self.classifier = nn.Linear(width(sp.feature_mix), num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = sp.bn_eps
        he_fout_init(self, zero_init_residual)

    # ---- backend ------------------------------------------------------------------------------------------
    def set_backend(self, backend: str) -> "Supernet":
        """Backend of every elastic depthwise conv and fused BatchNorm + activation ("auto", "cuda", "triton",
        "cpp", "torch"). The BatchNorms take "auto" instead where this build of the backend lacks their kernels
        (an extension or Triton module older than the op)."""
        bn_backend = backend if missing_kernels(backend) is None else "auto"
        for m in self.modules():
            if isinstance(m, ElasticDepthwise):
                m.backend = backend
            elif isinstance(m, ElasticBatchNorm2d):
                m.backend = bn_backend
        return self

    # ---- configs ------------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_elastic_stages(self) -> int:
        return self.space.elastic_depth_stages

    def max_config(self) -> SubnetConfig:
        return self.uniform_config(self.depths[-1], self.expand_ratios[-1], self.kernel_sizes[-1])

    def min_config(self) -> SubnetConfig:
        return self.uniform_config(self.depths[0], self.expand_ratios[0], self.kernel_sizes[0])

    def uniform_config(self, d: int, e: int, k: int, resolution: Optional[int] = None) -> SubnetConfig:
        config = SubnetConfig((k,) * self.num_blocks, (e,) * self.num_blocks, (d,) * self.num_elastic_stages,
                              resolution)
        self.validate(config)
        return config

    def sample_config(self, generator: Optional[torch.Generator] = None, *, kernel_sizes=None,
                      expand_ratios=None, depths=None) -> SubnetConfig:
        """A uniformly random subnet (independent per block and stage), reproducible from `generator`.
        The keyword arguments restrict the choices (e.g. OFA's phases); they must be subsets of the space."""
        ks = self._restrict("kernel_sizes", kernel_sizes, self.kernel_sizes)
        es = self._restrict("expand_ratios", expand_ratios, self.expand_ratios)
        ds = self._restrict("depths", depths, self.depths)

        def draw(options, n):
            idx = torch.randint(len(options), (n,), generator=generator)
            return tuple(options[i] for i in idx.tolist())

        return SubnetConfig(draw(ks, self.num_blocks), draw(es, self.num_blocks), draw(ds, self.num_elastic_stages))

    @staticmethod
    def _restrict(name, values, allowed):
        if values is None:
            return allowed
        chosen = _choices(name, values)
        if not set(chosen) <= set(allowed):
            raise ValueError(f"{name} restriction {tuple(values)} is not a subset of the supernet's {allowed}")
        return chosen

    def validate(self, config: SubnetConfig) -> None:
        if not isinstance(config, SubnetConfig):
            raise TypeError(f"config must be a SubnetConfig, got {type(config).__name__}")
        expect = (self.num_blocks, self.num_blocks, self.num_elastic_stages)
        got = (len(config.ks), len(config.es), len(config.ds))
        if got != expect:
            raise ValueError(f"config {config} has (ks, es, ds) lengths {got}; this {self.space_name} supernet "
                             f"needs {expect}")
        for name, vals, allowed in (("ks", config.ks, self.kernel_sizes), ("es", config.es, self.expand_ratios),
                                    ("ds", config.ds, self.depths)):
            bad = sorted(set(vals) - set(allowed))
            if bad:
                raise ValueError(f"config.{name} holds {bad}; this supernet allows {allowed}")

    def active_blocks(self, config: SubnetConfig) -> list[int]:
        """Indices of the elastic blocks the subnet runs, in order."""
        active = []
        for s, idx in enumerate(self.stage_blocks):
            depth = config.ds[s] if s < self.num_elastic_stages else len(idx)
            active.extend(idx[:depth])
        return active

    # ---- forward ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, config: Optional[SubnetConfig] = None, *, dropout: bool = True) -> torch.Tensor:
        """Logits of subnet `config` (None: the max net). `dropout=False` skips the classifier dropout even in
        training mode (DεpS and BigNAS train subnets without it)."""
        config = self.max_config() if config is None else config
        self.validate(config)
        x = self.stem(x)
        x = self.first_block(x, 3, 1)
        for i in self.active_blocks(config):
            x = self.blocks[i](x, config.ks[i], config.es[i])
        return self.head(x, dropout)

    def head(self, x: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        if self.final_expand is not None:
            x = self.final_expand(x)
        if not self.space.feature_mix_after_pool:
            x = self.feature_mix(x)
        x = x.mean((2, 3), keepdim=True)
        if self.space.feature_mix_after_pool:
            x = self.feature_mix(x)
        x = torch.flatten(x, 1)
        if dropout and self.dropout_rate > 0:
            x = F.dropout(x, self.dropout_rate, self.training)
        return self.classifier(x)

    # ---- costs --------------------------------------------------------------------------------------------
    def flops(self, config: Optional[SubnetConfig] = None, resolution: Optional[int] = None) -> float:
        """Multiply-accumulates of the conv and linear layers (SE included), OFA's way, for one image."""
        config = self.max_config() if config is None else config
        self.validate(config)
        res = resolution or config.resolution
        if res is None:
            raise ValueError("resolution must be given (or set in config.resolution)")
        macs = 0.0

        def conv(cin, cout, k, groups, size, stride):
            nonlocal macs
            out = (size + 2 * (k // 2) - k) // stride + 1
            macs += out * out * cout * (cin // groups) * k * k
            return out

        stem = self.stem.conv
        size = conv(stem.in_channels, stem.out_channels, 3, 1, res, stem.stride[0])
        for block, k, e in [(self.first_block, 3, 1)] + [(self.blocks[i], config.ks[i], config.es[i])
                                                          for i in self.active_blocks(config)]:
            mid = block.middle_channels(e)
            if block.has_expand:
                conv(block.in_ch, mid, 1, 1, size, 1)
            size = conv(mid, mid, k, mid, size, block.stride)
            if block.se is not None:
                macs += 2 * mid * se_width(mid)
            conv(mid, block.out_ch, 1, 1, size, 1)
        c = self.blocks[-1].out_ch
        if self.final_expand is not None:
            conv(c, self.final_expand.conv.out_channels, 1, 1, size, 1)
            c = self.final_expand.conv.out_channels
        fm = self.feature_mix.conv.out_channels
        conv(c, fm, 1, 1, 1 if self.space.feature_mix_after_pool else size, 1)
        macs += fm * self.num_classes
        return macs

    def params(self, config: Optional[SubnetConfig] = None) -> int:
        """Parameters of the standalone subnet (what `extract(config)` holds: conv, BN, SE, linear)."""
        from deps_fast.models.extract import extract

        config = self.max_config() if config is None else config
        return sum(p.numel() for p in extract(self, config).parameters())

    def extract(self, config: Optional[SubnetConfig] = None) -> nn.Module:
        """A standalone nn.Module of standard torch layers computing this subnet (see models.extract)."""
        from deps_fast.models.extract import extract

        return extract(self, self.max_config() if config is None else config)

    def reorganize_channels(self, optimizer: Optional[torch.optim.Optimizer] = None, stage: int = 0) -> None:
        """OFA's channel sort of every elastic block at OFA's `stage` (see models.reorganize)."""
        from deps_fast.models.reorganize import reorganize_channels

        reorganize_channels(self, optimizer, stage)


def build_supernet(name: str, num_classes: int, width_mult: float = 1.0, kernel_sizes=(3, 5, 7),
                   expand_ratios=(3, 4, 6), depths=(2, 3, 4), *, dropout: float = 0.1, in_channels: int = 3,
                   zero_init_residual: bool = False) -> Supernet:
    """The OFA supernet `name` ("mbv3", "mbv3-cifar" or "proxyless"; layouts in docs/method.md §2), initialised
    with OFA's he_fout scheme; kernel-transform matrices start at identity and train."""
    return Supernet(name, num_classes, width_mult, kernel_sizes, expand_ratios, depths, dropout=dropout,
                    in_channels=in_channels, zero_init_residual=zero_init_residual)
