"""Checkpoints of OFA (mit-han-lab/once-for-all) in and out of a deps_fast supernet.

OFA's `OFAMobileNetV3` and `OFAProxylessNASNets` hold the same tensors as our "mbv3" / "mbv3-cifar" and
"proxyless" supernets under other names. The names follow from a few rules, applied per module:

    ours                                OFA
    stem.*                              first_conv.*                          (ConvLayer: .conv, .bn)
    first_block.<part>.*                blocks.0.conv.<path>.*                (static MBConvLayer)
    blocks.<i>.<part>.*                 blocks.<i+1>.conv.<path>.<wrap>.*     (DynamicMBConvLayer)
    blocks.<i>.depthwise.transforms.<t> blocks.<i+1>.conv.depth_conv.conv.<s>to<t>_matrix
    blocks.<i>.se.<reduce|expand>.*     blocks.<i+1>.conv.depth_conv.se.fc.<reduce|expand>.*
    final_expand.*                      final_expand_layer.*
    feature_mix.*                       feature_mix_layer.*
    classifier.*                        classifier.linear.*

where <part> -> <path> is expand -> inverted_bottleneck.conv, expand_bn -> inverted_bottleneck.bn,
depthwise -> depth_conv.conv, dw_bn -> depth_conv.bn, project -> point_linear.conv, project_bn ->
point_linear.bn; <wrap> is the inner module of OFA's dynamic ops (DynamicConv2d / DynamicSeparableConv2d keep
an nn.Conv2d as `.conv`, DynamicBatchNorm2d an nn.BatchNorm2d as `.bn`), and `<s>to<t>_matrix` maps the next
larger kernel size s of the space down to t (OFA's `'%dto%d_matrix'`; ours is keyed by t alone). Both apply
the matrix as F.linear(flat_kernel, M), so the tensors copy as they are.

`num_batches_tracked`: copied when both sides have it, never reported when either side lacks it (it does not
affect eval outputs, and OFA's momentum-based BN does not read it). Every other key is accounted for: a key
we have that the checkpoint does not fill is `missing`, a checkpoint key we have no place for is
`unexpected`, and a key present on both sides with different shapes is `mismatched` (and not copied).
"""
from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import torch

from deps_fast.models.supernet import Supernet

__all__ = ["ImportReport", "load_ofa_state_dict", "ofa_key_map", "to_ofa_state_dict"]

# OFA's BatchNorm eps per space: OFAMobileNetV3 is trained and served with bn_param (0.1, 1e-5)
# (train_ofa_net.py, model_zoo.ofa_net); OFAProxylessNASNets defaults to bn_param (0.1, 1e-3), which
# model_zoo.ofa_net keeps for the released proxyless supernet.
OFA_BN_EPS = {"mbv3": 1e-5, "mbv3-cifar": 1e-5, "proxyless": 1e-3}

_FIXED_LAYERS = {"stem": "first_conv", "final_expand": "final_expand_layer", "feature_mix": "feature_mix_layer"}
_BLOCK_PARTS = {
    "expand": ("inverted_bottleneck", "conv"),
    "expand_bn": ("inverted_bottleneck", "bn"),
    "depthwise": ("depth_conv", "conv"),
    "dw_bn": ("depth_conv", "bn"),
    "project": ("point_linear", "conv"),
    "project_bn": ("point_linear", "bn"),
}
_NBT = "num_batches_tracked"


@dataclass(frozen=True)
class ImportReport:
    """What `load_ofa_state_dict` did. Keys in `missing` and `mismatched` are ours; `unexpected` keys are the
    checkpoint's (after unwrapping "state_dict" and stripping "module."). `mismatched` entries are
    (our key, checkpoint shape, our shape). `notes` are differences that no key shows (BN eps)."""

    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every key matched with the right shape (notes aside)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"OFA import: {self.loaded} tensors loaded, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"]
        if self.missing:
            lines.append("  missing (ours, not in the checkpoint): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("  unexpected (checkpoint keys with no place here): " + ", ".join(self.unexpected))
        for key, theirs, ours in self.mismatched:
            lines.append(f"  shape mismatch at {key}: checkpoint {list(theirs)}, supernet {list(ours)}")
        if self.loaded == 0 and (self.missing or self.unexpected):
            lines.append("  no key matched: is this an OFA OFAMobileNetV3 / OFAProxylessNASNets state dict of "
                         "the same space?")
        lines.extend("  note: " + n for n in self.notes)
        return "\n".join(lines)


def _check_space(supernet: Supernet) -> None:
    if not isinstance(supernet, Supernet):
        raise TypeError(f"supernet must be a deps_fast Supernet, got {type(supernet).__name__}")
    if supernet.space_name not in OFA_BN_EPS:
        raise NotImplementedError(f"OFA checkpoint import/export supports the spaces {sorted(OFA_BN_EPS)}; "
                                  f"got {supernet.space_name!r}")


def _ofa_name(key: str, kernel_sizes: tuple[int, ...]) -> str:
    """OFA's name for our state-dict key (see the module docstring for the rules)."""
    head, _, rest = key.partition(".")
    if head in _FIXED_LAYERS:
        return f"{_FIXED_LAYERS[head]}.{rest}"
    if head == "classifier":
        return f"classifier.linear.{rest}"
    if head == "first_block":
        part, _, leaf = rest.partition(".")
        if part in _BLOCK_PARTS:  # a static MBConvLayer: nn.Sequential members hold torch modules
            path, member = _BLOCK_PARTS[part]
            return f"blocks.0.conv.{path}.{member}.{leaf}"
    m = re.fullmatch(r"blocks\.(\d+)\.(\w+)\.(.+)", key)
    if m:
        ofa_block = f"blocks.{int(m.group(1)) + 1}.conv"
        part, leaf = m.group(2), m.group(3)
        if part == "se":
            return f"{ofa_block}.depth_conv.se.fc.{leaf}"
        t = re.fullmatch(r"transforms\.(\d+)", leaf)
        if part == "depthwise" and t:
            small = int(t.group(1))
            larger = [k for k in kernel_sizes if k > small]
            if small in kernel_sizes and larger:
                return f"{ofa_block}.depth_conv.conv.{larger[0]}to{small}_matrix"
        elif part in _BLOCK_PARTS:  # the member is a dynamic op wrapping its torch module under the same name
            path, member = _BLOCK_PARTS[part]
            return f"{ofa_block}.{path}.{member}.{member}.{leaf}"
    raise NotImplementedError(f"no OFA name for supernet key {key!r} (ofa_import's rules do not cover it)")


def ofa_key_map(supernet: Supernet) -> "OrderedDict[str, str]":
    """Our state-dict key -> OFA's, for every tensor of `supernet` (a bijection)."""
    _check_space(supernet)
    mapping = OrderedDict((k, _ofa_name(k, supernet.kernel_sizes)) for k in supernet.state_dict())
    if len(set(mapping.values())) != len(mapping):  # pragma: no cover - guards the rules themselves
        raise RuntimeError("ofa_import: two supernet keys map to one OFA key")
    return mapping


def to_ofa_state_dict(supernet: Supernet) -> "OrderedDict[str, torch.Tensor]":
    """`supernet.state_dict()` under OFA's names: what OFAMobileNetV3 / OFAProxylessNASNets with the same
    width_mult, ks_list, expand_ratio_list and depth_list would save (load it there with OFA's
    `load_state_dict`, or save it as {"state_dict": ...} like OFA's run manager). The tensors are the
    state_dict's (detached, sharing storage): clone them to keep a snapshot."""
    sd = supernet.state_dict()
    return OrderedDict((theirs, sd[ours]) for ours, theirs in ofa_key_map(supernet).items())


def _unwrap(state_dict) -> dict:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping (a state dict or a checkpoint with 'state_dict'), got "
                        f"{type(state_dict).__name__}")
    if isinstance(state_dict.get("state_dict"), Mapping):
        state_dict = state_dict["state_dict"]
    keys = list(state_dict)
    strip = bool(keys) and all(isinstance(k, str) and k.startswith("module.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict value at {key!r} is a {type(value).__name__}, not a tensor")
        if strip:
            key = key[len("module."):]
        # OFA before Nov 2020 named ResidualBlock.conv `mobile_inverted_conv`; OFA's own loader renames it.
        key = key.replace(".mobile_inverted_conv.", ".conv.")
        if key in out:
            raise ValueError(f"state dict holds {key!r} twice (with and without 'module.' or "
                             f"'mobile_inverted_conv')")
        out[key] = value
    return out


def _bn_eps_note(supernet: Supernet) -> tuple[str, ...]:
    want = OFA_BN_EPS[supernet.space_name]
    eps = sorted({m.eps for m in supernet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
    if eps and eps != [want]:
        return (f"OFA's {supernet.space_name} network uses BatchNorm eps={want:g}, this supernet eps={eps}: "
                f"the weights load, but outputs will differ from OFA's until the eps match",)
    return ()


def _value_notes(fill: dict, ours: dict) -> tuple:
    """Warnings about values that load but are suspect: non-finite weights, integer tensors cast to float."""
    non_finite = [k for k, v in fill.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    cast = [k for k, v in fill.items() if ours[k].is_floating_point() and not v.is_floating_point()]
    notes = []
    if non_finite:
        notes.append(f"{len(non_finite)} tensors hold NaN or inf (e.g. {non_finite[0]}): the checkpoint is damaged "
                     f"or from a diverged run")
    if cast:
        notes.append(f"{len(cast)} integer tensors were cast to float (e.g. {cast[0]}): not a trained checkpoint?")
    return tuple(notes)


def load_ofa_state_dict(supernet: Supernet, state_dict, strict: bool = False) -> ImportReport:
    """Copy an OFA OFAMobileNetV3 / OFAProxylessNASNets state dict into `supernet` (in place).

    `state_dict` is a state dict or a checkpoint holding it under "state_dict" (OFA's run manager and model
    zoo format); a "module." prefix on every key (DataParallel) is stripped, as is OFA's legacy
    `.mobile_inverted_conv.` name. Shapes are checked per tensor; mismatched tensors are not copied.
    Any missing, unexpected or mismatched key (num_batches_tracked excepted, see the module docstring) is a
    `warnings.warn` of the report, or with `strict=True` a ValueError naming them, raised before anything
    is copied. A BN eps that differs from OFA's for the space is a warning (never an error).
    """
    _check_space(supernet)
    theirs = _unwrap(state_dict)
    ours = supernet.state_dict()
    to_ours = {t: o for o, t in ofa_key_map(supernet).items()}

    fill, missing, unexpected, mismatched = {}, [], [], []
    for key, value in theirs.items():
        our_key = to_ours.get(key)
        if our_key is None:
            if not key.endswith(_NBT):
                unexpected.append(key)
        elif not isinstance(value, torch.Tensor) or value.device.type == "meta":
            raise ValueError(f"load_ofa_state_dict: {key!r} holds no data ({type(value).__name__}"
                             f"{' on the meta device' if isinstance(value, torch.Tensor) else ''}); load the "
                             f"checkpoint with map_location='cpu'")
        elif tuple(value.shape) != tuple(ours[our_key].shape):
            mismatched.append((our_key, tuple(value.shape), tuple(ours[our_key].shape)))
        else:
            fill[our_key] = value
    matched = set(fill) | {m[0] for m in mismatched}
    missing = [k for k in ours if k not in matched and not k.endswith(_NBT)]
    report = ImportReport(loaded=len(fill), missing=tuple(missing), unexpected=tuple(unexpected),
                          mismatched=tuple(mismatched), notes=_bn_eps_note(supernet) + _value_notes(fill, ours))
    if strict and not report.ok:
        raise ValueError("load_ofa_state_dict(strict=True) refused the checkpoint; nothing was copied.\n"
                         + str(report))
    with torch.no_grad():
        for key, value in fill.items():
            ours[key].copy_(value)
    if not report.ok or report.notes:
        warnings.warn(str(report), stacklevel=2)
    return report
