"""recalibrate_bn: BN statistics of one subnet recomputed from a fixed set of batches (docs/method.md §6)."""
from __future__ import annotations

import warnings
from typing import Iterable, Optional

import torch
import torch.nn as nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, config=None, batches: Iterable[torch.Tensor] = ()) -> nn.Module:
    """Reset every BatchNorm the subnet uses and set its running mean / variance to the average over
    `batches` of the per-batch mean and *biased* variance (OFA's set_running_statistics).

    Works on a supernet (`config` names the subnet; its elastic BNs get the statistics of their active
    prefix, the rest of the shared buffers is untouched) and on an extracted subnet (`config=None`).
    During the pass each BN normalises with its batch's own statistics, as in training; dropout is off.
    Returns `model`, left in the training/eval mode it had (call .eval() before evaluating).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches must hold at least one batch of images")
    for i, x in enumerate(batches):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"batches[{i}] must be a torch.Tensor of images [N, C, H, W], got {type(x).__name__}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sums: dict[nn.Module, list] = {}

    def hook(module, inputs):
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = (x - mean.view(1, -1, *([1] * (x.dim() - 2)))).pow(2).mean(dims)
        acc = sums.setdefault(module, [0.0, 0.0, 0])
        acc[0], acc[1], acc[2] = acc[0] + mean, acc[1] + var, acc[2] + 1

    saved = [(bn, bn.momentum) for bn in bns]
    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    was_training = model.training
    try:
        for bn in bns:
            bn.momentum = 0.0  # batch statistics normalise, running buffers stay as they are during the pass
        model.train()
        for x in batches:
            model(x, config, dropout=False) if config is not None else _forward_without_dropout(model, x)
    finally:
        for h in handles:
            h.remove()
        for bn, momentum in saved:
            bn.momentum = momentum
        model.train(was_training)
    non_finite = 0
    for bn, (mean, var, n) in sums.items():
        c = mean.numel()
        bn.running_mean[:c] = (mean / n).to(bn.running_mean.dtype)
        bn.running_var[:c] = (var / n).to(bn.running_var.dtype)
        non_finite += int((~torch.isfinite(bn.running_mean[:c])).sum() + (~torch.isfinite(bn.running_var[:c])).sum())
    if non_finite:
        warnings.warn(f"recalibrate_bn: {non_finite} running statistics are NaN or inf (non-finite calibration "
                      f"images or weights); the subnet's outputs will be too", RuntimeWarning, stacklevel=2)
    return model


def _forward_without_dropout(model: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:
        m.eval()
    return model(x)
