"""One optimizer step of any schedule, driven by the schedule's StepPlan.

The step's gradient is ∇L_max + β·Σ_subnets ∇L_sub (docs/method.md §3): the max net with label-smoothed CE and
dropout when the phase trains it, then each sampled subnet with its loss scaled by β; one optimizer step.
All losses go through the fused distillation loss.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from deps_fast.ops import distillation_loss
from deps_fast.schedules import StepPlan, subnet_generator


@dataclass
class StepResult:
    """What one optimizer step reports back to the loop."""
    losses: dict            # name -> mean loss over micro-batches (float); names: max, min, rand0, rand1, ...
    finite: bool            # losses and the gradient norm finite on every rank: the update was applied
    stop: bool              # some rank asked to stop (signal)
    grad_norm: float = 0.0  # this rank's gradient norm before the update (inf/nan when the step was skipped)


def step_subnets(model, plan: StepPlan, seed: int):
    """The subnets of this step besides the max net, identical on every rank: (name, config)."""
    phase = plan.phase
    chosen = [("min", model.min_config())] if phase.include_min else []
    restrict = dict(kernel_sizes=phase.kernel_sizes, depths=phase.depths, expand_ratios=phase.expand_ratios)
    for i in range(phase.n_random):
        chosen.append((f"rand{i}", model.sample_config(subnet_generator(seed, plan.step, i), **restrict)))
    return chosen


def autocast_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(model, optimizer, plan: StepPlan, micro_batches: Sequence[tuple], *, seed: int,
               label_smoothing: float, amp_dtype: Optional[torch.dtype] = None, scaler=None, teacher=None,
               sync: Optional[Callable[[list], list]] = None,
               stop_requested: Callable[[], bool] | bool = False, max_loss: Optional[dict] = None) -> StepResult:
    """Run the plan's nets on each micro-batch, accumulate gradients, sync ranks, step the optimizer.

    `teacher` is the frozen full model for phases with teacher == "frozen" (OFA). `sync(flags)` averages
    gradients over ranks and returns the summed flags. A non-finite loss or gradient norm on any rank skips the
    update, so weights never take a step that would make them non-finite (divergence is caught where it starts;
    under fp16 the GradScaler's own inf check does this). A finite loss above `max_loss` (the trainer's spike
    threshold per loss name, e.g. {"max": 23.0}) counts as a blow-up and is skipped the same way. A skipped
    step leaves everything as it was, BN running statistics included (its forward passes would have fed them
    the blow-up). `stop_requested` is read just before the ranks sync, so a signal that arrives during the
    step stops the run right after it, on every rank alike.
    """
    phase = plan.phase
    device = micro_batches[0][0].device
    set_lr(optimizer, plan.lr)
    optimizer.zero_grad(set_to_none=True)
    subnets = step_subnets(model, plan, seed)
    max_config = model.max_config()
    scale = 1.0 / len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    running = list(model.buffers())  # BN statistics and counters: a few thousand numbers, restored if skipped
    running_before = [b.detach().clone() for b in running]

    def backward(name, loss, weight):
        totals[name] = totals.get(name, 0.0) + loss.detach() * scale
        loss = loss * (weight * scale)
        (scaler.scale(loss) if scaler is not None else loss).backward()

    for x, y in micro_batches:
        teacher_logits = None
        if phase.train_max:
            with autocast_context(device, amp_dtype):
                logits = model(x, max_config, dropout=True)
            backward("max", distillation_loss(logits, None, y, soft_weight=0.0, hard_weight=1.0,
                                              label_smoothing=label_smoothing), 1.0)
            if phase.teacher == "inplace":
                teacher_logits = logits.detach()
        if phase.teacher == "frozen" and subnets:
            with torch.no_grad(), autocast_context(device, amp_dtype):
                teacher_logits = teacher(x, teacher.max_config(), dropout=False)
        for name, config in subnets:
            with autocast_context(device, amp_dtype):
                # DεpS / BigNAS subnets run without dropout; OFA keeps it for every sampled subnet
                logits = model(x, config, dropout=not phase.train_max)
            hard = phase.subnet_label_loss
            # teacher and student logits come from the same autocast context, hence share a dtype
            loss = distillation_loss(logits, teacher_logits, y if hard else None,
                                     soft_weight=1.0 if teacher_logits is not None else 0.0,
                                     hard_weight=1.0 if hard else 0.0,
                                     label_smoothing=label_smoothing if hard else 0.0)
            backward(name, loss, plan.beta if phase.beta_ramp else 1.0)

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # float32 norm of the local gradients: inf once they pass ~1e19, the scale at which an update wrecks weights
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([g.float() for g in grads]))) if grads and \
        scaler is None else torch.zeros((), device=device)
    values = torch.stack([v.float() for v in totals.values()] + [norm.float()]).tolist()  # one device sync a step
    grad_norm, values = values[-1], values[:-1]
    limits = max_loss or {}
    finite = all(math.isfinite(v) and v <= limits.get(name, math.inf) for name, v in zip(totals, values)) \
        and math.isfinite(grad_norm)
    wants_stop = stop_requested() if callable(stop_requested) else stop_requested
    flags = [0.0 if finite else 1.0, 1.0 if wants_stop else 0.0]
    if sync is not None:
        flags = sync(flags)
    finite = flags[0] == 0.0
    if finite:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_copy_(running, running_before)
        if scaler is not None:
            scaler.update(scaler.get_scale() / 2)
    return StepResult(dict(zip(totals, values)), finite, flags[1] > 0, grad_norm)


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only (not BN, biases or kernel-transform matrices)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() > 1 and "transforms" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
