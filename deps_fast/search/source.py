"""Where a trained supernet comes from: a deps_fast training run, or weights saved by once-for-all.

Both give a `Source`: the supernet (weights loaded, eval mode, on the device), the data it was trained on,
its training resolution, the run directory the search writes into, and an identity of the weights (file and
hash) that keys every cached measurement. Mistakes a user can make (no such run, no checkpoint, an OFA file
that does not fit the space) are ValueErrors with one clear line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from deps_fast.models import build_supernet, load_ofa_state_dict
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer.datasets import load_dataset
from deps_fast.trainer.options import Options


@dataclass
class Source:
    supernet: torch.nn.Module
    data: str                 # the data spec (as load_dataset takes it)
    resolution: int           # the training resolution
    run_dir: Path             # search/ is written inside
    identity: dict            # what the weights are: file, step, hash
    options: Optional[Options] = None  # the training options (None for an OFA checkpoint)

    def dataset(self, resolution: int):
        """The data at `resolution` (batches resized on the device for small sets)."""
        return load_dataset(self.data, resolution=resolution)


def _options_from(saved: dict) -> Options:
    names = {f.name for f in dataclasses.fields(Options)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    return Options(**values)


def from_run(run_dir, device: torch.device) -> Source:
    """The supernet of a training run directory (its config.json and newest good checkpoint)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"--run {str(run_dir)!r}: no such directory (give a training output such as "
                         f"runs/deps-mbv3-cifar-mnist5k)")
    config_file = run / "config.json"
    if not config_file.is_file():
        raise ValueError(f"--run {str(run_dir)!r} has no config.json: not a deps_fast training output")
    try:
        o = _options_from(json.loads(config_file.read_text())["options"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--run {str(run_dir)!r}: config.json is unreadable ({exc})") from exc
    found = ckpt.latest_checkpoint(run / "checkpoints", map_location="cpu")
    if found is None:
        raise ValueError(f"--run {str(run_dir)!r}: no valid checkpoint in {run / 'checkpoints'} (has training "
                         f"saved one yet?)")
    state, path = found
    data = load_dataset(o.data, resolution=o.resolution)
    supernet = build_supernet(o.space, data.num_classes, o.width_mult, o.resolved_kernel_sizes(), o.expand_ratios,
                              o.depths, dropout=o.dropout, in_channels=data.in_channels)
    supernet.load_state_dict(state["model"])
    with open(path, "rb") as f:
        digest = ckpt.HEADER.unpack(f.read(ckpt.HEADER.size))[1].hex()  # the payload's sha256, stored on save
    identity = {"checkpoint": str(path.resolve()), "step": int(state["step"]), "sha256": digest}
    return Source(supernet.to(device).eval(), str(o.data), int(data.resolution), run, identity, o)


def from_ofa(file, space: str, data: Optional[str], out: Optional[str], device: torch.device,
             width_mult: float = 1.0, resolution: Optional[int] = None) -> Source:
    """A supernet of `space` holding the weights of once-for-all's checkpoint `file` (number of classes and input
    channels read from it); `data` is required (OFA files carry none)."""
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"--ofa-checkpoint {str(file)!r}: no such file")
    if not data:
        raise ValueError("--ofa-checkpoint needs --data (the data set to evaluate subnets on, e.g. an ImageNet "
                         "folder with train/ and val/)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file given by the user
        raise ValueError(f"--ofa-checkpoint {str(file)!r} is not a readable torch checkpoint ({exc})") from exc
    weights = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    heads = [v for k, v in (weights or {}).items() if k.endswith("classifier.linear.weight")]
    stems = [v for k, v in (weights or {}).items() if k.endswith("first_conv.conv.weight")]
    if not heads or not stems:
        raise ValueError(f"--ofa-checkpoint {str(file)!r} holds no OFA supernet weights (no first_conv / "
                         f"classifier.linear tensors)")
    supernet = build_supernet(space, int(heads[0].shape[0]), width_mult, in_channels=int(stems[0].shape[1]))
    report = load_ofa_state_dict(supernet, loaded)
    if not report.ok:
        raise ValueError(f"--ofa-checkpoint {str(file)!r} does not fit --space {space} --width-mult {width_mult:g}: "
                         + str(report).splitlines()[0])
    dataset = load_dataset(data, resolution=resolution)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    run_dir = Path(out) if out else Path("runs") / f"ofa-{path.stem}"
    identity = {"checkpoint": str(path.resolve()), "step": None, "sha256": digest}
    return Source(supernet.to(device).eval(), str(data), int(dataset.resolution), run_dir, identity)
