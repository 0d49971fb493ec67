"""The trainer end to end on the embedded digits: schedules, the step's gradient, resume, ranks, guards, CLI."""
import copy
import json
import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from deps_fast.models import build_supernet
from deps_fast.schedules import deps
from deps_fast.train import main
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer.loop import Trainer, train
from deps_fast.trainer.options import parse_options
from deps_fast.trainer.step import step_subnets, train_step

# A tiny but real run: 64 images a step, width 0.25 (8..40 channels), 31 steps make half an epoch.
TINY = ["--width-mult", "0.25", "--batch-size", "64", "--calib-images", "128", "--calib-batch", "64",
        "--eval-every", "0", "--log-every", "100"]


def tiny(tmp_path, *extra, name="run"):
    return parse_options(TINY + ["--out", str(tmp_path / name)] + list(extra))


def final_weights(out):
    state, _ = ckpt.latest_checkpoint(out / "checkpoints")
    return state["step"], state["model"]


# ---- one step ------------------------------------------------------------------------------------------------
class NoStep(torch.optim.SGD):
    """Leaves the accumulated gradient in .grad for inspection."""

    def step(self, closure=None):
        return None


def test_step_gradient_is_max_plus_beta_times_subnets():
    torch.manual_seed(0)
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25, kernel_sizes=(3, 5, 7), dropout=0.0, in_channels=1)
    sched = deps(10, lr=0.1, steps_per_epoch=4, eps_epochs=2)
    step = next(t for t in range(sched.total_steps()) if 0 < sched.beta_at(t) < 0.9)
    plan = sched.plan(step)
    x, y = torch.randn(6, 1, 12, 12), torch.randint(10, (6,))
    twin = copy.deepcopy(net).set_backend("torch")  # the twin runs PyTorch's convolutions, not our kernels
    net.set_backend("cpp")
    train_step(net, NoStep(net.parameters(), lr=0.1), plan, [(x, y)], seed=7, label_smoothing=0.1)

    # by hand, with plain PyTorch losses
    max_logits = twin(x, twin.max_config())
    total = F.cross_entropy(max_logits, y, label_smoothing=0.1)
    teacher = max_logits.detach().softmax(1)
    names = []
    for name, config in step_subnets(twin, plan, seed=7):
        names.append(name)
        student = twin(x, config).log_softmax(1)
        total = total + plan.beta * -(teacher * student).sum(1).mean()
    total.backward()
    assert names == ["min", "rand0", "rand1"] and 0 < plan.beta < 1
    # relative to each parameter's gradient, and to the whole gradient for those that vanish in exact
    # arithmetic (a BN bias feeding another BN: float noise of either implementation)
    total_norm = torch.stack([q.grad.norm() for q in twin.parameters() if q.grad is not None]).norm()
    for (n, p), q in zip(net.named_parameters(), twin.parameters()):
        if q.grad is None:
            assert p.grad is None or torch.all(p.grad == 0), n
        else:
            err = (p.grad - q.grad).norm()
            assert err <= 1e-4 * q.grad.norm() + 1e-6 * total_norm, f"{n}: gradient error {err:.2e}"


def test_sampling_is_the_same_on_every_rank_and_differs_per_step():
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25)
    sched = deps(10, lr=0.1, steps_per_epoch=4)
    t = sched.total_steps() - 1
    rank0 = step_subnets(net, sched.plan(t), seed=3)
    rank1 = step_subnets(copy.deepcopy(net), sched.plan(t), seed=3)
    assert rank0 == rank1
    assert step_subnets(net, sched.plan(t - 1), seed=3) != rank0


# ---- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, epochs", [("deps", "0.15"), ("ofa", "0.1"), ("bignas", "0.1")])
def test_tiny_end_to_end_runs(tmp_path, schedule, epochs):
    report = train(tiny(tmp_path, "--schedule", schedule, "--epochs", epochs))
    out = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "report.json", "report.md", "pareto.png"):
        assert (out / f).is_file(), f
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    names = [s["name"] for s in report["subnets"]]
    assert "D4-E6-K7 (max)" in names and len(names) >= 6
    assert all(0 <= s["top1"] <= 100 and s["mflops"] > 0 for s in report["subnets"])
    # top-1 counts whole test images (1000 in mnist5k); a handful of steps already lifts the max net (last)
    # above chance (10 %): 16-23 % with seed 0, where stale BN statistics or untrained weights give ~10 %
    assert all(abs(s["top1"] * 10 - round(s["top1"] * 10)) < 1e-6 for s in report["subnets"]), report["subnets"]
    assert report["subnets"][-1]["name"].endswith("(max)") and report["subnets"][-1]["top1"] > 13, report["subnets"]
    assert report["total"]["device_hours"] > 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    phases = {s["phase"] for s in steps}
    expected = {"deps": {"fm_warmup", "eps_ramp", "shrink"}, "bignas": {"sandwich"},
                "ofa": {"teacher", "kernel", "depth_34", "depth_234", "expand_46", "expand_346"}}[schedule]
    assert phases == expected
    if schedule == "deps":
        betas = [s["beta"] for s in steps if s["phase"] == "eps_ramp"]
        assert betas == sorted(betas) and 0 < betas[0] < 1
        assert set(steps[0]["losses"]) == {"max"} and set(steps[-1]["losses"]) == {"max", "min", "rand0", "rand1"}


def test_kill_and_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # 9 steps (62 a full epoch); the stop falls in the FM-warmup, the ε-ramp (channel sort) starts after it
    args = ["--epochs", "0.15", "--ckpt-every", "2"]
    train(tiny(tmp_path, *args, name="straight"))
    assert train(tiny(tmp_path, *args, "--stop-after-steps", "3", name="killed")) is None
    step, _ = final_weights(tmp_path / "killed")
    assert step == 3
    train(tiny(tmp_path, *args, "--resume", name="killed"))
    s1, w1 = final_weights(tmp_path / "straight")
    s2, w2 = final_weights(tmp_path / "killed")
    assert s1 == s2 == 9
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    args = ["--epochs", "0.25", "--ckpt-every", "1", "--stop-after-steps", "3"]
    train(tiny(tmp_path, *args))
    step, newest = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[0]
    assert step == 3
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[: len(data) // 2])
    trainer = Trainer(tiny(tmp_path, "--epochs", "0.25", "--resume"))
    with pytest.warns(RuntimeWarning, match="ckpt-000000003"):
        assert trainer.resume()
    assert trainer.step == 2


def test_non_finite_losses_skip_the_update_then_abort(tmp_path):
    trainer = Trainer(tiny(tmp_path, "--epochs", "0.25", "--max-bad-steps", "3"))
    good = trainer.batch

    def poisoned(step):
        x, y = good(step)
        return torch.full_like(x, float("nan")), y

    trainer.batch = poisoned
    before = copy.deepcopy(trainer.model.state_dict())
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match="3 skipped steps in a row"):
        warnings.simplefilter("always")
        trainer.run()
    assert sum("non-finite or exploding loss" in str(w.message) for w in caught) == 3
    after = trainer.model.state_dict()  # BN running statistics and counters included: restored on every skip
    assert all(torch.equal(before[k], after[k]) for k in before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, argv):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(parse_options(argv))


def test_two_gloo_ranks_equal_one_process_on_the_same_global_batch(tmp_path):
    """One sandwich step (max + min + 2 random, in-place KD, β ramp, channel sort) on 2 gloo ranks equals one
    process accumulating the same two half batches. One step, because float32 training at this scale is
    chaotic: a 1e-7 difference in summation order grows ~100x per step (seen: 2e-7, 5e-5, 7e-3)."""
    # dropout 0: each rank draws its own dropout masks; everything else is shared or sharded exactly.
    # --eps-epochs = E_fm (0.05 * 0.15): no FM-warmup step, the ε-ramp starts at step 0
    common = TINY + ["--epochs", "0.15", "--dropout", "0", "--calib-images", "64", "--fm-fraction", "0.05",
                     "--eps-epochs", "0.0075", "--stop-after-steps", "1"]
    mp.spawn(_rank_main, args=(2, _free_port(), common + ["--out", str(tmp_path / "two")]), nprocs=2, join=True)
    # the one process at the ranks' thread count: the channels_last CPU kernels (BatchNorm, oneDNN) reduce in a
    # thread-count-dependent order, and this chaotic step turns that into visible differences
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(parse_options(common + ["--accum-steps", "2", "--out", str(tmp_path / "one")]))
    finally:
        torch.set_num_threads(threads)
    one, _ = ckpt.latest_checkpoint(tmp_path / "one" / "checkpoints")
    two, _ = ckpt.latest_checkpoint(tmp_path / "two" / "checkpoints")
    assert one["step"] == two["step"] == 1
    losses = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert losses[0]["phase"] == "eps_ramp" and set(losses[0]["losses"]) == {"max", "min", "rand0", "rand1"}
    params = [n for n, _ in build_supernet("mbv3-cifar", 10, 0.25, (7,), in_channels=1).named_parameters()]
    for k in params:  # BN running statistics are per rank (rank 0's half batch), as in DDP without SyncBN
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=1e-4, atol=1e-6, msg=k)
    for i, state in one["optimizer"]["state"].items():  # the momentum buffers hold the averaged gradient
        torch.testing.assert_close(two["optimizer"]["state"][i]["momentum_buffer"], state["momentum_buffer"],
                                   rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2


# ---- command line -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--schedule", "spos"], "invalid choice"),
    (["--epochs", "-1"], "positive float"),
    (["--kernel-sizes", "3,x"], "comma-separated integers"),
    (["--epochs", "2", "--budget-scale", "0.1"], "not both"),
    (["--fm-fraction", "1.5"], "fm_fraction"),
    (["--batch-size", "100", "--accum-steps", "3"], "accum_steps"),
    (["--config", "/nonexistent/run.yaml"], "no such file"),
    (["--data", "/nonexistent/cifar"], "does not exist"),
    (["--backend", "cuda", "--device", "cpu"], "cuda"),
    (["--compare", "/nonexistent/report.json"], "/nonexistent/report.json"),
])
def test_bad_command_lines_say_what_is_wrong(argv, message, capsys, tmp_path):
    try:
        status = main(argv + ["--out", str(tmp_path / "x")])
    except SystemExit as exc:  # argparse
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and message in err


def test_options_precedence_preset_then_file_then_flags(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lr: 0.05\nbatch_size: 32\nschedule: ofa\n")
    o = parse_options(["--preset", "cifar10", "--config", str(cfg), "--batch-size", "16"])
    assert (o.space, o.data, o.lr, o.batch_size, o.schedule) == ("mbv3-cifar", "cifar10", 0.05, 16, "ofa")
    assert o.resolved_kernel_sizes() == (3, 5, 7) and parse_options([]).resolved_kernel_sizes() == (7,)
    later = parse_options(["--preset", "cifar10", "--epochs", "10"])  # flags' epochs replace the preset's budget
    assert (later.epochs, later.budget_scale) == (10.0, None)
    with pytest.raises(ValueError, match="--preset imagenet needs --data"):
        parse_options(["--preset", "imagenet"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"learning_rate": 1}')
    with pytest.raises(ValueError, match="unknown option 'learning_rate'"):
        parse_options(["--config", str(bad)])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--schedule", "--space", "--data", "--epochs", "--batch-size", "--lr", "--out", "--resume", "--amp",
                 "--backend", "--device", "--seed", "--budget-scale", "--config", "--preset", "--compare",
                 "--ckpt-every"):
        assert flag in text
