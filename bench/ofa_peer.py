"""once-for-all's own OFAMobileNetV3 (PyPI `ofa`) as a benchmark peer: the code users would otherwise run.

Only the network modules are imported. The package's `ofa.utils` also imports its ImageNet data-loader helpers,
which need torchvision at import time (they subclass its transforms); the network code never calls them. So
that the peer runs where torchvision is absent (and no second torch is pulled in by installing it), empty
placeholder modules stand in for torchvision while `ofa` is imported and are removed right after.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import torch
import torch.nn.functional as F

from deps_fast.models.config import SubnetConfig


def available() -> str | None:
    """None when the peer can run here, else why not."""
    if importlib.util.find_spec("ofa") is None:
        return "the `ofa` package is not installed (pip install --no-deps ofa)"
    try:
        _ofa_mbv3_class()
    except Exception as exc:  # noqa: BLE001 - any import failure means no peer; say which
        return f"importing ofa failed: {type(exc).__name__}: {exc}"
    return None


def _ofa_mbv3_class():
    placeholders = {}
    if importlib.util.find_spec("torchvision") is None:
        tv = types.ModuleType("torchvision")
        tr = types.ModuleType("torchvision.transforms")
        fn = types.ModuleType("torchvision.transforms.functional")
        tr.RandomResizedCrop = tr.RandomCrop = object  # base classes of ofa's data transforms, never used here
        tr.functional, tv.transforms = fn, tr
        placeholders = {"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn}
    sys.modules.update(placeholders)
    try:
        from ofa.imagenet_classification.elastic_nn.networks.ofa_mbv3 import OFAMobileNetV3
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return OFAMobileNetV3


def build(num_classes: int, width_mult: float, kernel_sizes, expand_ratios, depths, dropout: float = 0.1):
    """OFA's supernet with the same space as our "mbv3" (its defaults: bn momentum 0.1, eps 1e-5)."""
    cls = _ofa_mbv3_class()
    return cls(n_classes=num_classes, bn_param=(0.1, 1e-5), dropout_rate=dropout, width_mult=width_mult,
               ks_list=list(kernel_sizes), expand_ratio_list=list(expand_ratios), depth_list=list(depths))


def activate(net, config: SubnetConfig) -> None:
    net.set_active_subnet(ks=list(config.ks), e=list(config.es), d=list(config.ds))


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """OFA's cross_entropy_loss_with_soft_target on softmax(teacher), written out in eager ops."""
    return torch.mean(torch.sum(-F.softmax(target_logits, dim=-1) * F.log_softmax(logits, dim=-1), dim=1))


def sandwich_step(net, optimizer, x, y, max_config: SubnetConfig, subnets, label_smoothing: float,
                  beta: float = 1.0) -> None:
    """The step our trainer runs for a DεpS shrinking plan (max net with label-smoothed CE, each subnet
    distilled from the max net's logits, one SGD step), on OFA's network and with its eager losses."""
    optimizer.zero_grad(set_to_none=True)
    activate(net, max_config)
    logits = net(x)
    F.cross_entropy(logits, y, label_smoothing=label_smoothing).backward()
    teacher = logits.detach()
    for config in subnets:
        activate(net, config)
        (soft_cross_entropy(net(x), teacher) * beta).backward()
    optimizer.step()
