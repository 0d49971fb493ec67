"""Subnets as numbers: OFA's one-hot feature vector (what the accuracy predictor reads) and an integer genome
(what NSGA-II mutates), both convertible to and from `SubnetConfig`.

Feature layout (OFA's `MobileNetArchEncoder`, docs/method.md §9): one-hot resolution, then for every block
slot in network order a one-hot kernel size, then for every block slot a one-hot expand ratio; a slot that
its stage's depth skips is all zeros. A space with one kernel size keeps the layout (its kernel "one-hot" is
then 1 for every active block, which still tells the depth).

Genome layout: kernel-size index per block, expand-ratio index per block, depth index per elastic stage,
resolution index. Many genomes name one network (a skipped block's genes do not matter); `canonical` gives
every network one config, with skipped blocks at the smallest kernel size and expand ratio.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from deps_fast import _validate
from deps_fast.models import SubnetConfig


class SubnetEncoding:
    """Features and genomes of one supernet's subnets at a set of resolutions."""

    def __init__(self, supernet, resolutions: Sequence[int]):
        self.resolutions = _validate.int_choices("resolutions", resolutions, distinct=True)
        self.kernel_sizes, self.expand_ratios = supernet.kernel_sizes, supernet.expand_ratios
        self.depths = supernet.depths
        self.num_blocks, self.num_stages = supernet.num_blocks, supernet.num_elastic_stages
        # stage of each block slot and its position in the stage; stages past the elastic ones always run
        self._stage = np.full(self.num_blocks, -1)
        self._position = np.zeros(self.num_blocks, dtype=np.int64)
        for s, idx in enumerate(supernet.stage_blocks):
            for pos, i in enumerate(idx):
                self._stage[i] = s if s < self.num_stages else -1
                self._position[i] = pos
        nb, nk, ne = self.num_blocks, len(self.kernel_sizes), len(self.expand_ratios)
        self._k_offset = len(self.resolutions)
        self._e_offset = self._k_offset + nb * nk
        self.num_features = self._e_offset + nb * ne
        self.genome_upper = np.array([nk - 1] * nb + [ne - 1] * nb + [len(self.depths) - 1] * self.num_stages
                                     + [len(self.resolutions) - 1], dtype=np.int64)

    @property
    def genome_length(self) -> int:
        return len(self.genome_upper)

    # ---- configs ------------------------------------------------------------------------------------------
    def check(self, config: SubnetConfig) -> SubnetConfig:
        """`config` with a resolution of this encoding (ValueError naming what does not fit otherwise)."""
        if config.resolution not in self.resolutions:
            raise ValueError(f"config {config} has resolution {config.resolution}; the search covers "
                             f"{self.resolutions}")
        for name, values, allowed in (("ks", config.ks, self.kernel_sizes), ("es", config.es, self.expand_ratios),
                                      ("ds", config.ds, self.depths)):
            if len(values) != (self.num_stages if name == "ds" else self.num_blocks) or not set(values) <= set(allowed):
                raise ValueError(f"config.{name}={values} does not fit this supernet (choices {allowed})")
        return config

    def active(self, ds: np.ndarray) -> np.ndarray:
        """[n, num_blocks] bool: which block slots run, for depth VALUES `ds` of shape [n, num_stages]."""
        ds = np.asarray(ds)
        stage_depth = np.where(self._stage >= 0, ds[:, np.maximum(self._stage, 0)], np.iinfo(np.int64).max)
        return self._position[None, :] < stage_depth

    def canonical(self, config: SubnetConfig) -> SubnetConfig:
        """The one config of the network `config` names: skipped blocks at the smallest k and e."""
        self.check(config)
        on = self.active(np.array([config.ds]))[0]
        ks = tuple(k if a else self.kernel_sizes[0] for k, a in zip(config.ks, on))
        es = tuple(e if a else self.expand_ratios[0] for e, a in zip(config.es, on))
        return SubnetConfig(ks, es, config.ds, config.resolution)

    # ---- genomes ------------------------------------------------------------------------------------------
    def to_genomes(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        rows = []
        for c in configs:
            self.check(c)
            rows.append([self.kernel_sizes.index(k) for k in c.ks] + [self.expand_ratios.index(e) for e in c.es]
                        + [self.depths.index(d) for d in c.ds] + [self.resolutions.index(c.resolution)])
        return np.array(rows, dtype=np.int64).reshape(len(rows), self.genome_length)

    def _split(self, genomes: np.ndarray):
        g = np.asarray(genomes, dtype=np.int64).reshape(-1, self.genome_length)
        if (g < 0).any() or (g > self.genome_upper).any():
            raise ValueError(f"genome values must lie in [0, {self.genome_upper.tolist()}]")
        nb, ns = self.num_blocks, self.num_stages
        return g[:, :nb], g[:, nb:2 * nb], g[:, 2 * nb:2 * nb + ns], g[:, -1]

    def from_genomes(self, genomes: np.ndarray) -> list[SubnetConfig]:
        """Canonical configs of the genomes (rows)."""
        k_idx, e_idx, d_idx, r_idx = self._split(genomes)
        ks, es, ds = (np.asarray(v)[i] for v, i in ((self.kernel_sizes, k_idx), (self.expand_ratios, e_idx),
                                                     (self.depths, d_idx)))
        on = self.active(ds)
        ks = np.where(on, ks, self.kernel_sizes[0])
        es = np.where(on, es, self.expand_ratios[0])
        return [SubnetConfig(tuple(k.tolist()), tuple(e.tolist()), tuple(d.tolist()), self.resolutions[r])
                for k, e, d, r in zip(ks, es, ds, r_idx.tolist())]

    def genome_features(self, genomes: np.ndarray) -> np.ndarray:
        """[n, num_features] float32 one-hot features of genome rows, vectorised (one call per generation)."""
        k_idx, e_idx, d_idx, r_idx = self._split(genomes)
        n, nb = len(k_idx), self.num_blocks
        on = self.active(np.asarray(self.depths)[d_idx])
        out = np.zeros((n, self.num_features), dtype=np.float32)
        rows = np.arange(n)
        out[rows, r_idx] = 1.0
        blocks = np.arange(nb)[None, :]
        nk, ne = len(self.kernel_sizes), len(self.expand_ratios)
        r_on, c_on = np.nonzero(on)
        out[r_on, (self._k_offset + blocks * nk + k_idx)[r_on, c_on]] = 1.0
        out[r_on, (self._e_offset + blocks * ne + e_idx)[r_on, c_on]] = 1.0
        return out

    # ---- features -----------------------------------------------------------------------------------------
    def encode(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self.genome_features(self.to_genomes(configs))

    def decode(self, features: np.ndarray) -> list[SubnetConfig]:
        """Canonical configs of one-hot feature rows (the inverse of `encode` up to skipped blocks)."""
        f = np.asarray(features).reshape(-1, self.num_features)
        nb, nk, ne = self.num_blocks, len(self.kernel_sizes), len(self.expand_ratios)
        r_part = f[:, :self._k_offset]
        k_part = f[:, self._k_offset:self._e_offset].reshape(-1, nb, nk)
        e_part = f[:, self._e_offset:].reshape(-1, nb, ne)
        on = k_part.sum(-1) > 0
        if not np.array_equal(on, e_part.sum(-1) > 0) or (r_part.sum(-1) != 1).any():
            raise ValueError("features are not an encoding: a block has a kernel size without an expand ratio "
                             "(or the reverse), or the resolution is not one-hot")
        ds = np.zeros((len(f), self.num_stages), dtype=np.int64)
        for s in range(self.num_stages):
            ds[:, s] = on[:, self._stage == s].sum(-1)
        genomes = np.concatenate([np.where(on, k_part.argmax(-1), 0), np.where(on, e_part.argmax(-1), 0),
                                  np.searchsorted(self.depths, ds), r_part.argmax(-1)[:, None]], axis=1)
        configs = self.from_genomes(genomes)
        if not np.array_equal(self.genome_features(genomes), f):
            raise ValueError("features are not an encoding: active blocks must be a prefix of each stage "
                             "with depths the supernet allows")
        return configs
