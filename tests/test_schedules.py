"""deps_fast.schedules: phase boundaries, LR curves and DεpS's β_t against values worked out by hand here.

Every expected LR below is written out with math.cos from the formula in the schedules module docstring,
never through lr_at, so a change to the curve shows up as a failure rather than being mirrored.
"""
import json
import math

import pytest
import torch

from deps_fast.schedules import (LR_FLOOR, PAPER_EPOCHS, Phase, Schedule, bignas, deps, make_schedule, ofa,
                                 subnet_generator)


def bounds(schedule):
    return [schedule.phase_bounds(i) for i in range(len(schedule.phases))]


def cosine(peak, i, cosine_steps, floor=LR_FLOOR):
    """Hand formula: cosine part of a curve, i steps after its warmup, over cosine_steps steps."""
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * i / (cosine_steps - 1))))


def simple_phase(name, epochs, lr=0.1, lr_group=0, **kw):
    return Phase(name, epochs, lr, lr_group, train_max=True, **kw)


# ----------------------------------------------------------------------------------------------- boundaries
def test_deps_boundaries_at_27_epochs_10_steps():
    # E_fm = 13.5 epochs = 135 steps; E_ε = 5 * 27 / 270 = 0.5 epochs = 5 steps
    s = deps(27, lr=0.4, steps_per_epoch=10)
    assert [p.name for p in s.phases] == ["fm_warmup", "eps_ramp", "shrink"]
    assert bounds(s) == [(0, 130), (130, 135), (135, 270)]
    assert s.total_steps() == 270 and s.total_epochs() == 27
    assert (s.eps_start_epoch, s.eps_end_epoch) == (13.0, 13.5)


def test_deps_phase_flags():
    fm, ramp, shrink = deps(27, lr=0.4, steps_per_epoch=10, kernel_sizes=[7]).phases
    assert fm.train_max and not fm.samples_subnets and fm.teacher == "none" and not fm.sort_channels
    for p in (ramp, shrink):
        assert p.train_max and p.include_min and p.n_random == 2 and p.teacher == "inplace"
        assert not p.subnet_label_loss and p.kernel_sizes == (7,) and p.depths is None
        assert p.lr_group == 0 and p.lr == 0.4
    assert ramp.beta_ramp and ramp.sort_channels
    assert not shrink.beta_ramp and not shrink.sort_channels


def test_ofa_boundaries_and_total_at_paper_budget():
    s = ofa(lr=0.96, steps_per_epoch=1)
    assert s.total_epochs() == 605 and s.total_steps() == 605
    assert [p.name for p in s.phases] == ["teacher", "kernel", "depth_34", "depth_234", "expand_46",
                                          "expand_346"]
    assert bounds(s) == [(0, 180), (180, 305), (305, 330), (330, 455), (455, 480), (480, 605)]
    assert [p.lr_group for p in s.phases] == [0, 1, 2, 3, 4, 5]
    assert [p.warmup_epochs for p in s.phases] == [0, 5, 0, 5, 0, 5]


def test_bignas_boundaries():
    s = bignas(4, lr=0.2, steps_per_epoch=25)
    (p,) = s.phases
    assert p.name == "sandwich" and bounds(s) == [(0, 100)]
    assert p.train_max and p.include_min and p.n_random == 2 and p.teacher == "inplace"
    assert not p.beta_ramp and not p.subnet_label_loss and not p.sort_channels
    assert p.warmup_epochs == pytest.approx(5 * 4 / 400)


def test_boundaries_round_half_up():
    # cumulative 0.25, 0.35, 0.55 epochs * 10 = 2.5, 3.5, 5.5 steps -> 3, 4, 6 (Python's round(2.5) would give 2)
    s = Schedule("x", (simple_phase("a", 0.25), simple_phase("b", 0.1), simple_phase("c", 0.2)), 10)
    assert bounds(s) == [(0, 3), (3, 4), (4, 6)]


def test_every_nonempty_phase_gets_a_step_and_empty_ones_none():
    phases = (simple_phase("a", 0.01), simple_phase("b", 0.0), simple_phase("c", 0.01), simple_phase("d", 0.01))
    s = Schedule("x", phases, 10)
    assert bounds(s) == [(0, 1), (1, 1), (1, 2), (2, 3)]
    assert [s.phase_at(t)[1].name for t in range(3)] == ["a", "c", "d"]
    assert s.plan(1).phase_start and s.plan(1).phase_index == 2


# ---------------------------------------------------------------------------------------------------- LR
def test_deps_lr_with_warmup_by_hand():
    # 270 steps, one group; W = 10 warmup steps, then C = 260 cosine steps from 0.4 to 0.004
    s = deps(27, lr=0.4, steps_per_epoch=10, warmup_epochs=1)
    assert s.lr_at(0) == pytest.approx(0.4 * 1 / 10)
    assert s.lr_at(4) == pytest.approx(0.4 * 5 / 10)
    assert s.lr_at(9) == pytest.approx(0.4)  # warmup end
    assert s.lr_at(10) == pytest.approx(0.4)  # cosine start
    assert s.lr_at(140) == pytest.approx(0.4 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 130 / 259))))
    assert s.lr_at(269) == pytest.approx(0.4 * 0.01)  # last step sits on the floor


def test_lr_is_one_curve_across_deps_phases():
    s = deps(27, lr=0.4, steps_per_epoch=10)
    for t in (0, 129, 130, 134, 135, 200, 269):
        assert s.lr_at(t) == pytest.approx(cosine(0.4, t, 270))


def test_ofa_lr_per_phase_by_hand():
    # lr is the full model's peak: OFA trains its teacher at 2.6 (batch 2048), then the kernel phase at 0.96
    s = ofa(lr=2.6, steps_per_epoch=1)
    assert s.lr_at(0) == pytest.approx(2.6)
    assert s.lr_at(179) == pytest.approx(2.6 * 0.01)
    # kernel: 5 warmup steps from step 180, then 120 cosine steps
    assert s.lr_at(180) == pytest.approx(0.96 / 5)
    assert s.lr_at(184) == pytest.approx(0.96)
    assert s.lr_at(185) == pytest.approx(0.96)
    assert s.lr_at(245) == pytest.approx(0.96 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 60 / 119))))
    assert s.lr_at(304) == pytest.approx(0.96 * 0.01)
    # depth_34: OFA's 0.08 at batch 2048, no warmup, 25 cosine steps
    assert s.lr_at(305) == pytest.approx(0.08)
    assert s.lr_at(317) == pytest.approx(0.08 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 12 / 24))))
    assert s.lr_at(329) == pytest.approx(0.08 * 0.01)
    assert s.lr_at(330) == pytest.approx(0.24 / 5)  # depth_234 warmup
    assert s.lr_at(455) == pytest.approx(0.08)  # expand_46
    assert s.lr_at(484) == pytest.approx(0.24)  # expand_346 warmup end
    assert s.lr_at(604) == pytest.approx(0.24 * 0.01)


def test_ofa_lrs_relative_to_the_full_model():
    s = ofa(lr=0.3, steps_per_epoch=1)
    assert [p.lr for p in s.phases] == pytest.approx(
        [0.3, 0.3 * 0.96 / 2.6, 0.3 * 0.08 / 2.6, 0.3 * 0.24 / 2.6, 0.3 * 0.08 / 2.6, 0.3 * 0.24 / 2.6])


def test_bignas_lr_by_hand():
    # 100 steps, warmup 0.05 epochs * 25 = 1.25 -> 1 step, then 99 cosine steps
    s = bignas(4, lr=0.2, steps_per_epoch=25)
    assert s.lr_at(0) == pytest.approx(0.2)
    assert s.lr_at(50) == pytest.approx(0.2 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 49 / 98))))
    assert s.lr_at(99) == pytest.approx(0.2 * 0.01)
    s = bignas(4, lr=0.2, steps_per_epoch=25, warmup_epochs=0.4, lr_floor=0.0)
    assert [s.lr_at(t) for t in (0, 9, 10)] == pytest.approx([0.02, 0.2, 0.2])
    assert s.lr_at(99) == 0.0


def test_lr_floor_is_a_fraction_of_each_peak():
    s = ofa(lr=2.6, steps_per_epoch=1, lr_floor=0.1)
    assert s.lr_at(179) == pytest.approx(0.26) and s.lr_at(329) == pytest.approx(0.008)


# ------------------------------------------------------------------------------------------------------ β
def eta_27(t):
    """η of deps(27, lr=0.4, steps_per_epoch=10): one 270-step cosine, no warmup, floor 1%."""
    return 0.4 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / 269)))


def test_beta_zero_before_ramp_one_after():
    s = deps(27, lr=0.4, steps_per_epoch=10)
    assert all(s.beta_at(t) == 0.0 for t in range(130))
    assert all(s.beta_at(t) == 1.0 for t in range(135, 270))


def test_beta_inside_ramp_matches_method_formula():
    # a = (E_fm - E_ε) N = 130, ramp length E_ε N = 5, η(E_fm) = η(135)
    s = deps(27, lr=0.4, steps_per_epoch=10)
    for t in range(130, 135):
        assert s.beta_at(t) == pytest.approx((t - 130 + 1) / 5 * eta_27(135) / eta_27(t), rel=1e-12)
    assert s.beta_at(134) == pytest.approx(eta_27(135) / eta_27(134), rel=1e-12)


def test_effective_subnet_lr_ramps_linearly_to_eta_at_e_fm():
    s = deps(27, lr=0.4, steps_per_epoch=10)
    effective = [s.beta_at(t) * s.lr_at(t) for t in range(130, 136)]
    assert effective == pytest.approx([eta_27(135) * k / 5 for k in (1, 2, 3, 4, 5)] + [eta_27(135)], rel=1e-12)
    steps = [b - a for a, b in zip(effective[:-1], effective[1:])]
    assert steps == pytest.approx([eta_27(135) / 5] * 4 + [0.0], abs=1e-15)


def test_beta_uses_live_lr_with_warmup():
    # warmup longer than FM-warmup: the ramp sits inside the warmup and η(t) is still rising
    s = deps(27, lr=0.4, steps_per_epoch=10, warmup_epochs=14)
    eta = [0.4 * (t + 1) / 140 for t in range(136)]
    for t in range(130, 135):
        assert s.beta_at(t) == pytest.approx((t - 129) / 5 * eta[135] / eta[t], rel=1e-12)


def test_ramp_is_at_least_one_step():
    # E_ε = 0.05 epochs at N=1: 0.05 steps, forced to 1 step
    s = deps(2.7, lr=0.1, steps_per_epoch=1)
    assert bounds(s) == [(0, 1), (1, 2), (2, 3)]
    eta = [0.1 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / 2))) for t in range(3)]
    assert [s.beta_at(t) for t in range(3)] == pytest.approx([0.0, eta[2] / eta[1], 1.0])


def test_default_ramp_clamped_to_fm_warmup_drops_empty_phase():
    # E_fm = 0.01 * 27 = 0.27 epochs < default E_ε = 0.5: the ramp fills [0, E_fm) and starts at step 0
    s = deps(27, lr=0.4, steps_per_epoch=100, fm_fraction=0.01)
    assert [p.name for p in s.phases] == ["eps_ramp", "shrink"]
    assert bounds(s) == [(0, 27), (27, 2700)] and s.eps_start_epoch == 0.0
    assert s.beta_at(0) == pytest.approx(1 / 27 * s.lr_at(27) / s.lr_at(0))


def test_explicit_eps_epochs():
    s = deps(27, lr=0.4, steps_per_epoch=10, eps_epochs=2)
    assert bounds(s) == [(0, 115), (115, 135), (135, 270)]
    with pytest.raises(ValueError, match="eps_epochs"):
        deps(27, lr=0.4, steps_per_epoch=10, eps_epochs=14)


def test_beta_is_one_without_ramp():
    for s in (ofa(6.05, lr=0.1, steps_per_epoch=10), bignas(4, lr=0.1, steps_per_epoch=10)):
        assert {s.beta_at(t) for t in range(s.total_steps())} == {1.0}


# ---------------------------------------------------------------------------------------------------- OFA
def test_ofa_restrictions_and_losses():
    phases = {p.name: p for p in ofa(lr=0.1, steps_per_epoch=1).phases}
    space = {n: (p.kernel_sizes, p.depths, p.expand_ratios) for n, p in phases.items()}
    assert space == {
        "teacher": ((7,), (4,), (6,)),
        "kernel": ((3, 5, 7), (4,), (6,)),
        "depth_34": ((3, 5, 7), (3, 4), (6,)),
        "depth_234": ((3, 5, 7), (2, 3, 4), (6,)),
        "expand_46": ((3, 5, 7), (2, 3, 4), (4, 6)),
        "expand_346": ((3, 5, 7), (2, 3, 4), (3, 4, 6)),
    }
    assert [p.n_random for p in phases.values()] == [0, 1, 2, 2, 4, 4]
    assert [p.sort_channels for p in phases.values()] == [False, False, False, False, True, True]
    # OFA: stage 0 before expand {4,6}, stage 1 before expand {3,4,6} (keeps the e = 4 prefix)
    assert [phases["expand_46"].sort_stage, phases["expand_346"].sort_stage] == [0, 1]
    teacher = phases.pop("teacher")
    assert teacher.train_max and teacher.teacher == "none"
    for p in phases.values():
        assert not p.train_max and not p.include_min and not p.beta_ramp
        assert p.teacher == "frozen" and p.subnet_label_loss


def test_ofa_custom_choice_lists():
    phases = {p.name: p for p in ofa(lr=0.1, steps_per_epoch=1, kernel_sizes=(7,), depths=[1, 2, 3, 4],
                                     expand_ratios=(6, 3)).phases}
    assert phases["kernel"].kernel_sizes == (7,)  # degenerate but valid
    assert phases["depth_34"].depths == (3, 4) and phases["depth_234"].depths == (1, 2, 3, 4)
    assert phases["expand_46"].expand_ratios == (3, 6) and phases["expand_346"].expand_ratios == (3, 6)
    with pytest.raises(ValueError, match="depths"):
        ofa(lr=0.1, steps_per_epoch=1, depths=None)


# ----------------------------------------------------------------------------------------- budget scaling
@pytest.mark.parametrize("name", ["deps", "ofa", "bignas"])
def test_budget_scale_scales_every_phase(name):
    full = make_schedule(name, budget_scale=1.0, steps_per_epoch=10, lr=0.1)
    tenth = make_schedule(name, budget_scale=0.1, steps_per_epoch=10, lr=0.1)
    assert full.total_epochs() == pytest.approx(PAPER_EPOCHS[name])
    assert tenth.total_epochs() == pytest.approx(PAPER_EPOCHS[name] / 10)
    for big, small in zip(full.phases, tenth.phases):
        assert small.epochs == pytest.approx(big.epochs / 10)
        assert small.warmup_epochs == pytest.approx(big.warmup_epochs / 10)
    assert make_schedule(name, epochs=PAPER_EPOCHS[name] / 10, steps_per_epoch=10, lr=0.1) == tenth


def test_make_schedule_passes_factory_kwargs():
    s = make_schedule("deps", epochs=27, steps_per_epoch=10, lr=0.4, fm_fraction=0.6, n_random=3)
    assert s.eps_end_epoch == pytest.approx(16.2) and s.phases[-1].n_random == 3


@pytest.mark.parametrize("kwargs, word", [
    ({"epochs": 10, "budget_scale": 0.1}, "not both"),
    ({}, "neither"),
    ({"budget_scale": 0}, "budget_scale"),
])
def test_make_schedule_epochs_xor_budget(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_schedule("deps", steps_per_epoch=10, lr=0.1, **kwargs)


def test_make_schedule_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match=r"name must be one of \['bignas', 'deps', 'ofa'\], got 'once'"):
        make_schedule("once", epochs=1, steps_per_epoch=10, lr=0.1)


# ------------------------------------------------------------------------------------------------- plans
def test_plan_agrees_with_queries():
    s = deps(27, lr=0.4, steps_per_epoch=10)
    starts = {a for a, _ in bounds(s)}
    for t in range(s.total_steps()):
        plan = s.plan(t)
        index, phase = s.phase_at(t)
        assert (plan.step, plan.epoch, plan.phase_index, plan.phase) == (t, t // 10, index, phase)
        assert (plan.lr, plan.beta, plan.phase_start) == (s.lr_at(t), s.beta_at(t), t in starts)


def test_steps_outside_the_run_are_rejected():
    s = bignas(1, lr=0.1, steps_per_epoch=10)
    for bad in (-1, 10, 1.0, True):
        with pytest.raises(ValueError, match="step"):
            s.plan(bad)


# ------------------------------------------------------------------------------------------ serialisation
@pytest.mark.parametrize("schedule", [deps(27, lr=0.4, steps_per_epoch=10, kernel_sizes=(7,)),
                                      ofa(6.05, lr=0.1, steps_per_epoch=10),
                                      bignas(4, lr=0.1, steps_per_epoch=25)], ids=["deps", "ofa", "bignas"])
def test_to_dict_json_round_trip(schedule):
    data = schedule.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["total_steps"] == schedule.total_steps()
    assert [(p["start_step"], p["end_step"]) for p in data["phases"]] == bounds(schedule)
    assert Schedule.from_dict(json.loads(json.dumps(data))) == schedule


def test_from_dict_names_missing_keys():
    data = bignas(4, lr=0.1, steps_per_epoch=25).to_dict()
    del data["phases"][0]["teacher"]
    with pytest.raises(ValueError, match="teacher"):
        Schedule.from_dict(data)


# ------------------------------------------------------------------------------------------------ subnets
def draws(generator):
    return torch.randint(0, 1 << 30, (8,), generator=generator).tolist()


def test_subnet_generator_reproducible_and_distinct():
    g = subnet_generator(0, 5, 1)
    assert isinstance(g, torch.Generator) and g.device.type == "cpu"
    assert draws(subnet_generator(7, 5, 1)) == draws(subnet_generator(7, 5, 1))
    triples = [(7, 5, 1), (7, 5, 0), (7, 4, 1), (7, 1, 5), (8, 5, 1), (7, 51, 0), (7, 5, 10)]
    streams = {tuple(draws(subnet_generator(*t))) for t in triples}
    assert len(streams) == len(triples)


@pytest.mark.parametrize("args, word", [((-1, 0, 0), "seed"), ((0, -1, 0), "step"), ((0, 0, 1.5), "index")])
def test_subnet_generator_rejects_bad_arguments(args, word):
    with pytest.raises(ValueError, match=word):
        subnet_generator(*args)


# ------------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("factory, kwargs, word", [
    (deps, {"epochs": 0}, "epochs"),
    (deps, {"lr": -0.1}, "lr"),
    (deps, {"steps_per_epoch": 0}, "steps_per_epoch"),
    (deps, {"fm_fraction": 1.0}, "fm_fraction"),
    (deps, {"fm_fraction": 0}, "fm_fraction"),
    (deps, {"eps_epochs": -1}, "eps_epochs"),  # 0 is valid: DεpS without ε-shrinking
    (deps, {"n_random": -1}, "n_random"),
    (deps, {"warmup_epochs": -1}, "warmup_epochs"),
    (deps, {"warmup_epochs": 30}, "warmup_epochs"),
    (deps, {"kernel_sizes": ()}, "kernel_sizes"),
    (deps, {"depths": (2, 2)}, "depths"),
    (deps, {"expand_ratios": (3, 0)}, "expand_ratios"),
    (deps, {"lr_floor": 1.0}, "lr_floor"),
    (ofa, {"lr": float("nan")}, "lr"),
    (ofa, {"steps_per_epoch": 2.5}, "steps_per_epoch"),
    (bignas, {"epochs": -4}, "epochs"),
    (bignas, {"n_random": 1.5}, "n_random"),
])
def test_factories_name_bad_arguments(factory, kwargs, word):
    args = {"epochs": 27, "lr": 0.1, "steps_per_epoch": 10, **kwargs}
    with pytest.raises(ValueError, match=word):
        factory(args.pop("epochs"), **args)


@pytest.mark.parametrize("kwargs, word", [
    ({"teacher": "bogus"}, "teacher"),
    ({"train_max": False, "teacher": "inplace", "n_random": 2}, "train_max"),
    ({"train_max": False}, "trains nothing"),
    ({"beta_ramp": True}, "beta_ramp"),
    ({"n_random": 2}, "no loss"),
    ({"include_min": 1}, "include_min"),
    ({"name": ""}, "name"),
])
def test_phase_rejects_inconsistent_fields(kwargs, word):
    fields = {"name": "p", "epochs": 1, "lr": 0.1, "lr_group": 0, "train_max": True, **kwargs}
    with pytest.raises(ValueError, match=word):
        Phase(**fields)


def test_schedule_rejects_inconsistent_phases():
    a, b = simple_phase("a", 1), simple_phase("b", 1, lr_group=1)
    with pytest.raises(ValueError, match="not contiguous"):
        Schedule("x", (a, b, simple_phase("c", 1)), 10)
    with pytest.raises(ValueError, match="differ in lr"):
        Schedule("x", (a, simple_phase("c", 1, lr=0.2)), 10)
    with pytest.raises(ValueError, match="unique names"):
        Schedule("x", (a, simple_phase("a", 1, lr_group=1)), 10)
    with pytest.raises(ValueError, match="phases"):
        Schedule("x", (), 10)
    ramp = Phase("r", 1, 0.1, 0, train_max=True, include_min=True, teacher="inplace", beta_ramp=True)
    with pytest.raises(ValueError, match="eps_start_epoch"):
        Schedule("x", (a, ramp, simple_phase("c", 1)), 10, eps_start_epoch=0.5, eps_end_epoch=2)
    with pytest.raises(ValueError, match="followed by"):
        Schedule("x", (a, ramp), 10, eps_start_epoch=1, eps_end_epoch=2)
    with pytest.raises(ValueError, match="eps_start_epoch"):
        Schedule("x", (a,), 10, eps_start_epoch=1, eps_end_epoch=2)


# ----------------------------------------------------------------------------- the authors' recipe (issue 11)
def test_deps_sorts_at_the_authors_stage_by_default():
    ramp = {p.name: p for p in deps(27, lr=0.1, steps_per_epoch=10, expand_ratios=(3, 4, 6)).phases}["eps_ramp"]
    assert ramp.sort_channels and ramp.sort_stage == 1  # len([3, 4, 6]) - 2, as the authors call it
    one = {p.name: p for p in deps(27, lr=0.1, steps_per_epoch=10, expand_ratios=(6,)).phases}["eps_ramp"]
    assert one.sort_stage == 0
    chosen = {p.name: p for p in deps(27, lr=0.1, steps_per_epoch=10, sort_stage=0).phases}["eps_ramp"]
    assert chosen.sort_stage == 0


def test_eps_ramp_is_five_epochs_at_any_data_sets_full_budget():
    # CIFAR: 200 epochs is the full budget, so the ramp is the authors' 5 epochs (not 5 * 200 / 270 = 3.7)
    cifar = make_schedule("deps", budget_scale=1.0, full_epochs=200, steps_per_epoch=10, lr=0.1)
    assert cifar.total_epochs() == pytest.approx(200)
    assert cifar.eps_end_epoch - cifar.eps_start_epoch == pytest.approx(5.0)
    tenth = make_schedule("deps", budget_scale=0.1, full_epochs=200, steps_per_epoch=10, lr=0.1)
    assert tenth.eps_end_epoch - tenth.eps_start_epoch == pytest.approx(0.5)  # only the budget scale shortens it
    imagenet = make_schedule("deps", budget_scale=1.0, steps_per_epoch=10, lr=2.6, fm_fraction=150 / 270)
    assert (imagenet.eps_start_epoch, imagenet.eps_end_epoch) == pytest.approx((145.0, 150.0))


def test_deps_without_eps_shrinking_is_the_papers_ablation():
    s = deps(27, lr=0.4, steps_per_epoch=10, eps_epochs=0)
    phases = {p.name: p for p in s.phases}
    assert list(phases) == ["fm_warmup", "shrink"] and bounds(s) == [(0, 135), (135, 270)]
    assert phases["shrink"].sort_channels and phases["shrink"].sort_stage == 1
    assert s.eps_start_epoch is None and {s.beta_at(t) for t in range(s.total_steps())} == {1.0}
