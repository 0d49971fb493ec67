"""Multi-objective search with pymoo's NSGA-II over integer genomes (docs/method.md §9).

Objectives: maximise predicted accuracy, minimise one cost. Budgets are inequality constraints
`cost_j - budget_j <= 0`, which NSGA-II ranks feasibility-first. The accuracy and every cost are vectorised
functions of a [n, L] genome array, so each generation costs one batched predictor call. Variation follows
OFA's evolution on categorical genes: uniform crossover and per-gene random reset.

Before any search, `check_budgets` compares each budget with the exact smallest value the space can reach
and raises `InfeasibleBudget` naming it: an impossible budget ends at once instead of searching in vain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

Vectorised = Callable[[np.ndarray], np.ndarray]


class InfeasibleBudget(ValueError):
    """A budget below the smallest value any subnet of the space reaches (the message says which)."""


@dataclass
class Constraint:
    name: str          # e.g. "--max-mflops"
    cost: Vectorised   # genomes -> values in the budget's unit
    budget: float
    unit: str = ""


@dataclass
class Front:
    """The non-dominated feasible genomes found, by increasing cost (and so increasing accuracy)."""
    genomes: np.ndarray   # [m, L]
    accuracy: np.ndarray  # [m] predicted
    cost: np.ndarray      # [m] the objective cost
    evaluated: int        # genomes evaluated in all generations


def check_budgets(constraints: Sequence[Constraint], minimum: Callable[[Constraint], tuple]) -> None:
    """InfeasibleBudget for the first budget below `minimum(constraint)` = (smallest value, a subnet with it)."""
    for c in constraints:
        smallest, where = minimum(c)
        if c.budget < smallest:
            raise InfeasibleBudget(f"{c.name} {c.budget:g} is infeasible: the smallest {c.unit or 'value'} any "
                                   f"subnet of this space reaches is {smallest:.4g} ({where}); raise the budget to "
                                   f"at least that")


def pareto_front_2d(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both (higher accuracy, lower cost), by cost; of equal
    points the first is kept."""
    order = np.lexsort((-accuracy, cost))  # by cost, then best accuracy first
    keep, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            keep.append(i)
            best = accuracy[i]
    return np.array(keep, dtype=np.int64)


def nsga2(upper: np.ndarray, accuracy: Vectorised, cost: Vectorised, constraints: Sequence[Constraint] = (), *,
          population: int = 100, generations: int = 100, seed: int = 0, initial: Optional[np.ndarray] = None,
          mutation_prob: float = 0.1, progress: bool = True, label: str = "search") -> Front:
    """NSGA-II over integer genomes with genes in [0, upper]; genes with upper == 0 are held at 0.

    Returns the feasible non-dominated set of every genome evaluated in the run (an archive, so a good point
    the last population dropped is kept). `initial` rows seed the first population (the rest random).
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2  # lazy: pymoo is needed only when searching
    from pymoo.core.callback import Callback
    from pymoo.core.mutation import Mutation
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.ux import UniformCrossover
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize
    from tqdm import tqdm

    upper = np.asarray(upper, dtype=np.int64)
    free = np.nonzero(upper > 0)[0]
    if len(free) == 0:
        raise ValueError("the space has a single subnet: nothing to search")

    def full(x: np.ndarray) -> np.ndarray:
        genomes = np.zeros((len(x), len(upper)), dtype=np.int64)
        genomes[:, free] = np.rint(x).astype(np.int64)
        return genomes

    archive: list = []
    counted = [0]

    class SubnetProblem(Problem):
        def __init__(self):
            super().__init__(n_var=len(free), n_obj=2, n_ieq_constr=len(constraints), xl=0, xu=upper[free],
                             vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            genomes = full(x)
            acc, c = accuracy(genomes), cost(genomes)
            out["F"] = np.column_stack([-acc, c])
            if constraints:
                out["G"] = np.column_stack([k.cost(genomes) - k.budget for k in constraints])
                feasible = (out["G"] <= 0).all(1)
            else:
                feasible = np.ones(len(genomes), dtype=bool)
            archive.append((genomes[feasible], acc[feasible], c[feasible]))
            counted[0] += len(genomes)

    class RandomReset(Mutation):
        """Each gene is redrawn uniformly from its choices with probability `mutation_prob` (OFA: 0.1)."""

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            X = np.array(X, dtype=np.int64)
            hit = random_state.random(X.shape) < mutation_prob
            draws = random_state.integers(0, upper[free] + 1, size=X.shape)
            return np.where(hit, draws, X)

    class Bar(Callback):
        def __init__(self):
            super().__init__()
            self.bar = tqdm(total=generations, desc=label, unit="gen", disable=not progress, leave=False)

        def notify(self, algorithm):
            self.bar.update(1)

    sampling = IntegerRandomSampling()
    if initial is not None and len(initial):
        rng = np.random.default_rng(seed)
        seeds = np.asarray(initial, dtype=np.int64)[:population, free]
        rest = rng.integers(0, upper[free] + 1, size=(population - len(seeds), len(free)))
        sampling = np.concatenate([seeds, rest]).astype(float)
    algorithm = NSGA2(pop_size=population, sampling=sampling, crossover=UniformCrossover(),
                      mutation=RandomReset(), eliminate_duplicates=True)
    bar = Bar()
    try:
        minimize(SubnetProblem(), algorithm, ("n_gen", generations), seed=seed, verbose=False, callback=bar)
    finally:
        bar.bar.close()
    genomes = np.concatenate([a[0] for a in archive])
    acc = np.concatenate([a[1] for a in archive])
    c = np.concatenate([a[2] for a in archive])
    evaluated = counted[0]
    if len(genomes) == 0:
        return Front(np.zeros((0, len(upper)), dtype=np.int64), np.zeros(0), np.zeros(0), evaluated)
    keep = pareto_front_2d(acc, c)
    return Front(genomes[keep], acc[keep], c[keep], evaluated)
