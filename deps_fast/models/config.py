"""SubnetConfig: which subnet of a supernet runs, as an immutable, hashable, JSON-friendly value."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from deps_fast import _validate


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """OFA's channel rounding: nearest multiple of `divisor`, at least `min_value` (default divisor), and never
    below 90% of `value` (then one divisor more)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet: a kernel size and an expand ratio per elastic block, a depth per elastic stage.

    `ks[i]`, `es[i]` describe elastic block i in network order (every block slot of the supernet, also those
    a shallower depth skips, as OFA does); `ds[s]` keeps the first ds[s] blocks of stage s. `resolution` is the
    input size the subnet is meant for (used by `flops` and by the trainer's evaluation); the network itself
    runs on whatever it is given. Whether the values fit a particular supernet is checked by that supernet.
    """

    ks: tuple[int, ...]
    es: tuple[int, ...]
    ds: tuple[int, ...]
    resolution: Optional[int] = None

    def __post_init__(self) -> None:
        # kept in network order (not sorted): one entry per block / stage
        for name, label, odd in (("ks", "ks (kernel sizes)", True), ("es", "es (expand ratios)", False),
                                 ("ds", "ds (depths)", False)):
            values = getattr(self, name)
            _validate.int_choices(label, values, odd=odd)
            object.__setattr__(self, name, tuple(int(v) for v in values))
        if len(self.ks) != len(self.es):
            raise ValueError(f"ks and es must have one entry per elastic block, got {len(self.ks)} kernel sizes "
                             f"and {len(self.es)} expand ratios")
        if self.resolution is not None:
            object.__setattr__(self, "resolution", _validate.positive_int("resolution", self.resolution))

    # ---- readable and serialisable ------------------------------------------------------------------------
    def is_uniform(self) -> bool:
        return len(set(self.ks)) == 1 and len(set(self.es)) == 1 and len(set(self.ds)) == 1

    def __str__(self) -> str:
        res = "" if self.resolution is None else f"-R{self.resolution}"
        if self.is_uniform():
            return f"D{self.ds[0]}-E{self.es[0]}-K{self.ks[0]}{res}"
        join = "".join
        return f"D{join(map(str, self.ds))}-E{join(map(str, self.es))}-K{join(map(str, self.ks))}{res}"

    def to_dict(self) -> dict:
        return {"ks": list(self.ks), "es": list(self.es), "ds": list(self.ds), "resolution": self.resolution}

    @classmethod
    def from_dict(cls, d: dict) -> "SubnetConfig":
        if not isinstance(d, dict):
            raise ValueError(f"SubnetConfig.from_dict needs a dict with keys ks, es, ds[, resolution], got {d!r}")
        unknown = set(d) - {"ks", "es", "ds", "resolution"}
        missing = {"ks", "es", "ds"} - set(d)
        if unknown or missing:
            raise ValueError(f"SubnetConfig.from_dict: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        return cls(d["ks"], d["es"], d["ds"], d.get("resolution"))  # the constructor checks each value

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        return cls.from_dict(json.loads(text))
