"""`python -m deps_fast.train ... --plan` / `--plan-json`: the resolved options and the schedule, without reading
data or training. Steps per epoch come from the data's nominal training-set size (the output says which)."""
from __future__ import annotations

import json
from pathlib import Path

from deps_fast.trainer.options import NOMINAL_TRAIN_SIZES, Options, build_schedule


def nominal_train_size(options: Options) -> tuple[int, str]:
    """(images, what the number is) for the data the options name, never reading it."""
    data = str(options.data)
    name = Path(data).name.lower()
    if data.strip().lower() in ("mnist5k", "embedded"):
        return NOMINAL_TRAIN_SIZES["mnist5k"], "the embedded mnist5k: 4,000 training images"
    if "cifar" in name or options.preset in ("cifar10", "cifar100"):
        return NOMINAL_TRAIN_SIZES["cifar"], "assumed CIFAR's 50,000 training images (--plan reads no data)"
    return NOMINAL_TRAIN_SIZES["imagenet"], ("assumed ImageNet-1k's 1,281,167 training images (--plan reads no "
                                             "data)")


def _what_trains(phase) -> str:
    parts = ["max net (label-smoothed CE, dropout)"] if phase.train_max else []
    if phase.samples_subnets:
        nets = (["min"] if phase.include_min else []) + ([f"{phase.n_random} random"] if phase.n_random else [])
        loss = {"inplace": "KD from the same step's max logits", "frozen": "KD from the frozen full model",
                "none": ""}[phase.teacher]
        if phase.subnet_label_loss:
            loss = "label-smoothed CE + " + loss if loss else "label-smoothed CE"
        parts.append(f"{' + '.join(nets)} subnet(s) ({loss}{', scaled by beta_t' if phase.beta_ramp else ''})")
    return "; ".join(parts)


def describe(options: Options) -> dict:
    """The plan as a JSON-ready dict: at least peak_lr, warmup_epochs, fm_epochs (DεpS's E_fm, else None) and
    phases (each with its epochs, first and last step, peak LR, warmup, what trains, sort and space)."""
    images, note = nominal_train_size(options)
    steps_per_epoch = max(1, images // options.batch_size)
    schedule = build_schedule(options, steps_per_epoch)
    phases = []
    for index, phase in enumerate(schedule.phases):
        start, end = schedule.phase_bounds(index)
        phases.append({
            "name": phase.name, "epochs": phase.epochs, "first_step": start, "last_step": end - 1,
            "peak_lr": phase.lr, "warmup_epochs": phase.warmup_epochs, "trains": _what_trains(phase),
            "channel_sort_stage": phase.sort_stage if phase.sort_channels else None,
            "kernel_sizes": phase.kernel_sizes, "depths": phase.depths, "expand_ratios": phase.expand_ratios})
    plan = {"schedule": schedule.name, "train_images": images, "train_images_note": note,
            "batch_size": options.batch_size, "steps_per_epoch": steps_per_epoch,
            "total_epochs": schedule.total_epochs(), "total_steps": schedule.total_steps(),
            "peak_lr": options.lr, "lr_floor": schedule.lr_floor, "warmup_epochs": schedule.phases[0].warmup_epochs,
            "resolution_policy": options.resolution_policy(), "augment": options.augment,
            "fm_epochs": None, "eps_ramp_epochs": None, "eta_at_fm": None, "phases": phases,
            "options": options.to_dict()}
    if schedule.name == "deps":
        names = [p.name for p in schedule.phases]
        shrink_start = schedule.phase_bounds(names.index("shrink"))[0] if "shrink" in names else None
        plan["fm_epochs"] = options.fm_fraction * schedule.total_epochs()
        if schedule.eps_start_epoch is not None:
            plan["eps_ramp_epochs"] = [schedule.eps_start_epoch, schedule.eps_end_epoch]
        if shrink_start is not None:
            plan["eta_at_fm"] = schedule.lr_at(shrink_start)
    return plan


def render(plan: dict) -> str:
    o = plan["options"]
    lines = [f"{plan['schedule']} on {o['space']} (width {o['width_mult']}), data {o['data']}: "
             f"{plan['total_epochs']:g} epochs x {plan['steps_per_epoch']} steps = {plan['total_steps']} steps "
             f"of {plan['batch_size']} images ({plan['train_images_note']})",
             f"peak LR {plan['peak_lr']:g} (floor {plan['lr_floor']:g} of each peak), warmup "
             f"{plan['warmup_epochs']:g} epochs, resolution {plan['resolution_policy']}, augment {plan['augment']}"]
    if plan["fm_epochs"] is not None:
        ramp = plan["eps_ramp_epochs"]
        ramp_text = f"ε-ramp epochs {ramp[0]:g}-{ramp[1]:g}" if ramp else "no ε-ramp (β = 1 when shrinking starts)"
        eta = f", η(E_fm) = {plan['eta_at_fm']:.4g}" if plan["eta_at_fm"] is not None else ""
        lines.append(f"E_fm = {plan['fm_epochs']:g} epochs: max net alone before, {ramp_text}{eta}")
    lines.append("")
    for p in plan["phases"]:
        sort = "" if p["channel_sort_stage"] is None else f"; channel sort (stage {p['channel_sort_stage']}) first"
        lines.append(f"  {p['name']:<11} {p['epochs']:8.4g} epochs  steps {p['first_step']}-{p['last_step']}  "
                     f"peak LR {p['peak_lr']:.4g}  warmup {p['warmup_epochs']:.4g}  k{p['kernel_sizes']} "
                     f"d{p['depths']} e{p['expand_ratios']}")
        lines.append(f"  {'':<11} trains: {p['trains']}{sort}")
    lines += ["", "options: " + json.dumps(plan["options"])]
    return "\n".join(lines)


def print_plan(options: Options, as_json: bool = False) -> None:
    plan = describe(options)
    print(json.dumps(plan, indent=2) if as_json else render(plan))
