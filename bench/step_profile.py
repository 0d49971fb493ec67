"""Where a training step's CPU time goes: torch.profiler over a few steps, time shares by category.

Every profiled op's self time goes to one category: the op's own rule when one matches (a layout copy stays a
copy wherever it happens), else the category of the op that called it (the kernels inside a BatchNorm count as
BatchNorm). Time outside any op (Python: module calls, validation, config handling) is its own category, so
the shares add up to the steps' wall time.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

CATEGORIES = ("pointwise convs", "batchnorm fwd+bwd", "depthwise conv", "activations", "layout copies",
              "loss", "optimizer", "other ops", "python (outside ops)")

_BN = ("batch_norm", "bn_act", "BatchNorm")
_ACT = ("hardswish", "relu", "hardtanh", "hardsigmoid", "threshold_backward", "Hardswish", "Relu", "Hardtanh",
        "Hardsigmoid", "Threshold", "sigmoid", "Sigmoid", "clamp", "Clamp")
_LOSS = ("distill", "softmax", "Softmax", "nll_loss", "NllLoss", "cross_entropy")
_OPTIM = ("Optimizer.", "_foreach_", "zero_grad")


def _conv_kind(event) -> str:
    """pointwise or depthwise, from the recorded shapes of a convolution (x, weight, ...) or its backward
    (grad_out, x, weight, ...); a dense k x k conv (the stem) counts with the pointwise ones."""
    shapes = [s for s in (event.input_shapes or []) if isinstance(s, (list, tuple)) and len(s) == 4]
    if "backward" in event.name.lower() and len(shapes) >= 3:
        x, w = shapes[1], shapes[2]
    elif len(shapes) >= 2:
        x, w = shapes[0], shapes[1]
    else:
        return ""
    depthwise = w[1] == 1 and w[0] == x[1] and w[0] > 1 and w[2] > 1
    return "depthwise conv" if depthwise else "pointwise convs"


def classify(event) -> Optional[str]:
    """The category an op names by itself, or None (it then takes its caller's)."""
    name = event.name
    if name == "aten::copy_":
        return "layout copies"
    if "dwconv" in name or "depthwise" in name:
        return "depthwise conv"
    if "conv" in name.lower() and "transpose" not in name.lower():
        return _conv_kind(event) or None
    if any(key in name for key in _BN):
        return "batchnorm fwd+bwd"
    if any(key in name for key in _ACT):
        return "activations"
    if any(key in name for key in _LOSS):
        return "loss"
    if any(key in name for key in _OPTIM):
        return "optimizer"
    return None


def shares(events, wall_ms: float) -> dict:
    """{category: ms} over the events (a profiler's function events), plus the wall time outside any op."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    covered = 0.0

    def walk(event, inherited: str) -> None:
        category = classify(event) or inherited
        totals[category] += event.self_cpu_time_total / 1e3
        for child in event.cpu_children:
            walk(child, category)

    # the roots: events with no parent on their own thread
    for event in events:
        if event.cpu_parent is None:
            covered += event.cpu_time_total / 1e3
            walk(event, "other ops")
    totals["python (outside ops)"] = max(0.0, wall_ms - covered)
    return totals


def profile_step(run: Callable[[int], object], steps: int = 3, warmup: int = 1) -> dict:
    """Profile `steps` calls of run(i) after `warmup` unprofiled ones; return per-step ms by category, the
    wall ms per step and the top ops by self time."""
    for i in range(warmup):
        run(i)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            run(warmup + i)
        wall_ms = (time.perf_counter() - t0) * 1e3
    events = prof.events()
    per_step = {k: v / steps for k, v in shares(events, wall_ms).items()}
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    return {
        "steps": steps,
        "wall_ms_per_step": wall_ms / steps,
        "ms_per_step": {k: round(v, 3) for k, v in per_step.items()},
        "share": {k: round(v / (wall_ms / steps), 4) for k, v in per_step.items()},
        "top_ops": [{"name": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
                     "calls_per_step": e.count / steps} for e in top],
    }
