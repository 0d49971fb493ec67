"""Costs that add up over a subnet's parts: MFLOPs, parameters and (from a lookup table) latency.

A subnet is the stem, the fixed first block, its active elastic blocks, each at a kernel size and expand
ratio, and the head; every part's cost depends only on the part, its choices and the input resolution. So a
cost is a table `blocks[r, slot, k, e]` plus `fixed[r]` (stem + first block + head), a genome's cost is one
vectorised gather-and-sum, and the cheapest subnet of the space is found exactly, stage by stage, without a
search (`minimum`): this is how an infeasible budget is caught before searching.

FLOPs are counted on the extracted parts by hooks on their conv and linear layers (OFA's multiply-accumulate
rule, SE included) and parameters by counting the parts' tensors; tests check both against the supernet's own
`flops` / `params` for random subnets.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from deps_fast.models import SubnetConfig
from deps_fast.search.encoding import SubnetEncoding

METRICS = {"mflops": "MFLOPs", "params_m": "M params", "latency_ms": "ms"}


@dataclass
class Part:
    """One distinct piece of a subnet at one resolution: `module` (standard layers) fed `input_shape` (C, H, W).
    `key` names its shape (equal keys: same computation, so one latency measurement serves them all)."""
    key: str
    module: nn.Module
    input_shape: tuple


def subnet_parts(supernet, resolution: int):
    """The parts of every subnet at `resolution`: (fixed parts, {(slot, k, e): Part}).

    Block parts come from extracting the max-depth subnet at each (k, e) (uniform), so every slot exists;
    a block's input shape does not depend on the config (only a stage's first block strides, and it always runs).
    """
    fixed, blocks = [], {}
    ds = (supernet.depths[-1],) * supernet.num_elastic_stages
    for k, e in itertools.product(supernet.kernel_sizes, supernet.expand_ratios):
        config = SubnetConfig((k,) * supernet.num_blocks, (e,) * supernet.num_blocks, ds, resolution)
        static = supernet.extract(config).eval()
        shape = (supernet.in_channels, resolution, resolution)
        with torch.no_grad():
            x = torch.zeros(1, *shape, device=next(static.parameters()).device)
            x = static.stem(x)
            stem_shape = shape
            if not fixed:
                fixed.append(Part(shape_key("stem", stem_shape, static.stem), static.stem, stem_shape))
            first_shape = tuple(x.shape[1:])
            x = static.blocks[0](x)
            if len(fixed) == 1:
                first = static.blocks[0]
                fixed.append(Part(shape_key("first_block", first_shape, first), first, first_shape))
            for slot, block in enumerate(static.blocks[1:]):
                in_shape = tuple(x.shape[1:])
                blocks[(slot, k, e)] = Part(shape_key("block", in_shape, block, k=k, e=e), block, in_shape)
                x = block(x)
            if len(fixed) == 2:
                head_shape = tuple(x.shape[1:])
                fixed.append(Part(shape_key("head", head_shape, static.head), static.head, head_shape))
    return fixed, blocks


def shape_key(kind: str, input_shape, module: nn.Module, **choices) -> str:
    """A readable name of a part's computation (kind, choices, input shape) and a hash of everything else that
    decides it: every layer with its channels, kernel, stride, groups and bias (the module's repr) and the
    skip connections."""
    skips = [getattr(m, "residual", None) for m in module.modules()]
    digest = hashlib.sha1(f"{module!r}|{skips}".encode()).hexdigest()[:12]
    extra = "".join(f"-{k}{v}" for k, v in choices.items())
    return f"{kind}{extra}-in{'x'.join(map(str, input_shape))}-{digest}"


def count_macs(module: nn.Module, input_shape) -> float:
    """Multiply-accumulates of the conv and linear layers of `module` on one image of `input_shape`."""
    macs = 0.0

    def conv_hook(m, _inputs, out):
        nonlocal macs
        macs += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, _inputs, out):
        nonlocal macs
        macs += m.in_features * m.out_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            ref = next(module.parameters())
            module(torch.zeros(1, *input_shape, device=ref.device, dtype=ref.dtype))
    finally:
        for h in handles:
            h.remove()
    return macs


def count_params(module: nn.Module, _input_shape=None) -> float:
    return float(sum(p.numel() for p in module.parameters()))


class CostTable:
    """One additive cost of every subnet: `fixed[r]` plus `blocks[r, slot, k, e]` over the active slots."""

    def __init__(self, metric: str, encoding: SubnetEncoding, fixed: np.ndarray, blocks: np.ndarray):
        assert metric in METRICS
        self.metric, self.encoding = metric, encoding
        self.fixed, self.blocks = np.asarray(fixed, dtype=np.float64), np.asarray(blocks, dtype=np.float64)

    @classmethod
    def build(cls, metric: str, supernet, encoding: SubnetEncoding,
              part_cost: Callable[[Part], float], parts_at: Optional[Callable] = None) -> "CostTable":
        """The table of `metric` with each part's cost from `part_cost(part)` (in the metric's unit)."""
        parts_at = parts_at or (lambda r: subnet_parts(supernet, r))
        kinds, ratios = encoding.kernel_sizes, encoding.expand_ratios
        fixed = np.zeros(len(encoding.resolutions))
        blocks = np.zeros((len(encoding.resolutions), encoding.num_blocks, len(kinds), len(ratios)))
        for r, resolution in enumerate(encoding.resolutions):
            fixed_parts, block_parts = parts_at(resolution)
            fixed[r] = sum(part_cost(p) for p in fixed_parts)
            for (slot, k, e), part in block_parts.items():
                blocks[r, slot, kinds.index(k), ratios.index(e)] = part_cost(part)
        return cls(metric, encoding, fixed, blocks)

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """[n] costs of genome rows."""
        enc = self.encoding
        k_idx, e_idx, d_idx, r_idx = enc._split(genomes)
        on = enc.active(np.asarray(enc.depths)[d_idx])
        slots = np.arange(enc.num_blocks)[None, :]
        per_block = self.blocks[r_idx[:, None], slots, k_idx, e_idx]
        return self.fixed[r_idx] + (per_block * on).sum(1)

    def scaled(self, factor: float) -> "CostTable":
        return CostTable(self.metric, self.encoding, self.fixed * factor, self.blocks * factor)

    def of(self, configs) -> np.ndarray:
        return self(self.encoding.to_genomes(configs))

    def minimum(self) -> tuple[float, SubnetConfig]:
        """The smallest cost over the whole space and a subnet that has it (exact: parts are independent)."""
        enc = self.encoding
        best = None
        for r in range(len(enc.resolutions)):
            flat = self.blocks[r].reshape(enc.num_blocks, -1)
            cheapest = flat.min(1)  # per slot, over (k, e)
            choice = np.unravel_index(flat.argmin(1), self.blocks.shape[2:])
            total, ds = self.fixed[r], []
            for s in range(enc.num_stages):
                slots = np.nonzero(enc._stage == s)[0]
                sums = [cheapest[slots[enc._position[slots] < d]].sum() for d in enc.depths]
                ds.append(int(np.argmin(sums)))
                total += min(sums)
            total += cheapest[enc._stage < 0].sum()
            genome = np.concatenate([choice[0], choice[1], ds, [r]])
            if best is None or total < best[0]:
                best = (float(total), enc.from_genomes(genome[None])[0])
        return best
