"""Subnet evaluation (docs/method.md §6): extract, recalibrate BN on fixed training batches, top-1 on the test set.

Each subnet is extracted into its own standalone copy, so recalibrating it never disturbs the running
statistics the supernet is training with.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from deps_fast._util import prefers_channels_last
from deps_fast.models import SubnetConfig, recalibrate_bn
from deps_fast.trainer.report import UNIFORM_K7  # docs/method.md §6: the six uniform k7 subnets (d, e)



def final_subnets(model) -> list[tuple[str, SubnetConfig]]:
    """min, the six uniform k7 subnets the space allows, and max, each once, named like "D2-E3-K7 (min)",
    "D3-E3-K7", ..., "D4-E6-K7 (max)"."""
    chosen = {model.min_config(): f"{model.min_config()} (min)"}
    if 7 in model.kernel_sizes:
        for d, e in UNIFORM_K7:
            if d in model.depths and e in model.expand_ratios:
                chosen.setdefault(model.uniform_config(d, e, 7), f"D{d}-E{e}-K7")
    chosen.pop(model.max_config(), None)
    chosen[model.max_config()] = f"{model.max_config()} (max)"
    return [(name, config) for config, name in chosen.items()]


@torch.no_grad()
def top1(net: torch.nn.Module, batches: Iterable[tuple], device: torch.device,
         amp_dtype: Optional[torch.dtype] = None) -> float:
    """Top-1 accuracy (%) of `net` over `batches` of (x, y) already in the network's layout and size."""
    correct = total = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(x).argmax(1)
        correct += (pred == y).sum()
        total += y.numel()
    return 100.0 * float(correct) / max(total, 1)


def evaluate_subnet(model, config: SubnetConfig, calibration: list, test_batches: Iterable[tuple],
                    device: torch.device, amp_dtype=None, channels_last: Optional[bool] = None) -> float:
    """Top-1 (%) of subnet `config`: extracted, BN recalibrated on `calibration`, evaluated on `test_batches`.
    `channels_last` (default: the device's preference, deps_fast._util.prefers_channels_last) should match the
    layout of the batches."""
    static = model.extract(config)
    if channels_last is None:
        channels_last = prefers_channels_last(device)
    if channels_last:
        static = static.to(memory_format=torch.channels_last)
    recalibrate_bn(static, None, calibration)
    return top1(static.eval(), test_batches, device, amp_dtype)
