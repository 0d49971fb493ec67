"""OFA's channel sort: reorder each block's middle channels so that prefixes hold the most important ones.

Importance of a middle channel = L1 norm of its projection weights (OFA's re_organize_middle_weights); SE
channels are then sorted by the L1 norm of their SE-expand weights. Every tensor that indexes the middle (or
SE) channels is permuted the same way, so the max net computes the same function, and so is the optimizer's
per-parameter state (momentum buffers, Adam moments), which the DεpS authors' code forgets.

Stages (OFA's `expand_ratio_stage`): with the block's widths w_0 > w_1 > ... (one per expand ratio, largest
first), stage s adds OFA's offsets to the importances before sorting: for i = 1..s the channels [w_i, w_(i-1))
get (i - n) * 1e5 (n = number of expand ratios), so every band stays behind the narrower prefix in front of it
and is sorted within itself. Stage 0 is the global sort. OFA sorts with stage 0 before its expand {4,6} phase
and stage 1 before expand {3,4,6}, keeping the e = 4 prefix that the previous phase trained; the DεpS
authors use stage 1 when shrinking starts (docs/method.md §3-4).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from deps_fast import _validate
from deps_fast.models.layers import ElasticMBConv


def _permute_(tensor: torch.Tensor, dim: int, index: torch.Tensor, optimizer: Optional[torch.optim.Optimizer]) -> None:
    with torch.no_grad():
        tensor.copy_(tensor.index_select(dim, index))
    if optimizer is None or tensor not in optimizer.state:
        return
    state = optimizer.state[tensor]
    for key, value in state.items():
        # Per-element state has the parameter's shape; scalars such as Adam's step do not. A new tensor
        # rather than an in-place copy: state loaded from another optimizer may alias that one's buffers.
        if isinstance(value, torch.Tensor) and value.shape == tensor.shape:
            state[key] = value.index_select(dim, index)


def _permute_all(items: Iterable[tuple[torch.Tensor, int]], index, optimizer) -> None:
    for tensor, dim in items:
        _permute_(tensor, dim, index, optimizer)


def _bn_tensors(bn) -> list[tuple[torch.Tensor, int]]:
    return [(bn.weight, 0), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 0)]


def _sort_desc(importance: torch.Tensor) -> torch.Tensor:
    # stable, so equal importances (e.g. a fresh zero-initialised net) keep their order
    return torch.sort(importance, descending=True, stable=True).indices


def staged_importance(block: ElasticMBConv, stage: int = 0) -> torch.Tensor:
    """The middle channels' importances with OFA's stage offsets added (in the weights' dtype, as OFA does)."""
    importance = block.project.weight.detach().abs().sum(dim=(0, 2, 3))
    widths = [block.middle_channels(e) for e in sorted(block.expand_ratios, reverse=True)]
    stage = min(stage, len(widths) - 1)  # OFA would index past its list; a stage that high has nothing more to keep
    right, base = len(importance), -len(widths) * 1e5
    for i in range(stage + 1):
        left = widths[i]
        importance[left:right] += base
        base += 1e5
        right = left
    return importance


def reorganize_block(block: ElasticMBConv, optimizer: Optional[torch.optim.Optimizer] = None, stage: int = 0) -> None:
    order = _sort_desc(staged_importance(block, stage))
    middle = [(block.project.weight, 1), (block.depthwise.weight, 0)] + _bn_tensors(block.dw_bn)
    if block.has_expand:
        middle += [(block.expand.weight, 0)] + _bn_tensors(block.expand_bn)
    if block.se is not None:
        middle += [(block.se.expand.weight, 0), (block.se.expand.bias, 0), (block.se.reduce.weight, 1)]
    _permute_all(middle, order, optimizer)
    if block.se is not None:
        se_order = _sort_desc(block.se.expand.weight.detach().abs().sum(dim=(0, 2, 3)))
        _permute_all([(block.se.expand.weight, 1), (block.se.reduce.weight, 0), (block.se.reduce.bias, 0)],
                     se_order, optimizer)


def reorganize_channels(supernet, optimizer: Optional[torch.optim.Optimizer] = None, stage: int = 0) -> None:
    """Sort the middle channels of every elastic block of `supernet` (the fixed first block has none) at OFA's
    `stage` (see the module docstring)."""
    _validate.integer("stage", stage, minimum=0)
    for block in supernet.blocks:
        reorganize_block(block, optimizer, stage)
