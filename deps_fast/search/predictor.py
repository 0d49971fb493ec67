"""The accuracy predictor: OFA's MLP on the one-hot subnet encoding, trained with OFA's published recipe.

Network (OFA's `AccuracyPredictor`): three Linear(·, 400) + ReLU layers, a Linear(400, 1) without bias, plus
a frozen scalar `base_acc` set to the mean training accuracy, so the layers learn only the deviation from
it. Recipe (OFA issue 30): accuracies in [0, 1], Adam lr 1e-3, weight decay 1e-4, mini-batches, MSE. OFA
ships no training loop; the epoch count and batch size here are ours (docs/method.md §9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from deps_fast import _validate
from deps_fast._util import seeded_generator

HIDDEN, LAYERS = 400, 3


class AccuracyPredictor(nn.Module):
    """features [n, num_features] (float) -> predicted accuracy [n] in [0, 1] units."""

    def __init__(self, num_features: int, base_acc: float = 0.0):
        super().__init__()
        layers, width = [], _validate.positive_int("num_features", num_features)
        for _ in range(LAYERS):
            layers += [nn.Linear(width, HIDDEN), nn.ReLU()]
            width = HIDDEN
        self.layers = nn.Sequential(*layers, nn.Linear(HIDDEN, 1, bias=False))
        self.base_acc = nn.Parameter(torch.tensor(float(base_acc)), requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1) + self.base_acc

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Batched query from numpy (what the search calls once per generation)."""
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        return self.eval()(x).double().numpy()


@dataclass
class FitSettings:
    """OFA's recipe (lr, weight decay) plus our loop length and batch size (OFA: batch 500-1000 for 4K+ data;
    at a few hundred subnets smaller batches give more steps)."""
    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    progress: bool = False


def fit_predictor(features: np.ndarray, accuracy: np.ndarray,
                  settings: FitSettings = FitSettings()) -> AccuracyPredictor:
    """Train a predictor on `features` [n, F] and `accuracy` [n] (in [0, 1])."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(accuracy), dtype=torch.float32)
    if x.dim() != 2 or y.shape != (x.shape[0],) or len(y) < 2:
        raise ValueError(f"need features [n, F] and accuracy [n] with n >= 2, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if not ((y >= 0) & (y <= 1)).all():
        raise ValueError("accuracies must be fractions in [0, 1] (OFA's recipe), not percentages")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)  # the initial weights
        model = AccuracyPredictor(x.shape[1], float(y.mean()))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    batch = min(settings.batch_size, len(y))
    model.train()
    from tqdm import tqdm

    for epoch in tqdm(range(settings.epochs), desc="fit predictor", unit="epoch", disable=not settings.progress,
                      leave=False):
        order = torch.randperm(len(y), generator=seeded_generator("predictor", settings.seed, epoch))
        for start in range(0, len(y), batch):
            rows = order[start:start + batch]
            loss = nn.functional.mse_loss(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def rmse(predicted, actual) -> float:
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties in either list counted as neither concordant nor discordant, with tau-b's
    correction); NaN when either list is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau needs two 1-D lists of one length, got {a.shape} and {b.shape}")
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    pairs_a, pairs_b = np.count_nonzero(da), np.count_nonzero(db)
    if pairs_a == 0 or pairs_b == 0:
        return math.nan
    return float((da * db).sum() / math.sqrt(pairs_a * pairs_b))


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of n samples: a fixed random `fraction` held out (at least 2 of each)."""
    _validate.fraction("holdout fraction", fraction, include_zero=False)
    order = torch.randperm(n, generator=seeded_generator("predictor-holdout", seed)).numpy()
    held = min(max(2, int(round(n * fraction))), n - 2)
    return np.sort(order[held:]), np.sort(order[:held])
