"""The trainer's method rules (docs/method.md), each pinned against a computation written here, independently
of the code under test: comparing two runs of the same code cannot see a rule both runs break alike."""
import copy

import pytest
import torch
import torch.nn.functional as F

from deps_fast.models import build_supernet
from deps_fast.models.layers import ElasticBatchNorm2d
from deps_fast.schedules import bignas, deps
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer.datasets import load_dataset
from deps_fast.trainer.evaluate import evaluate_subnet
from deps_fast.trainer.loop import Trainer, train
from deps_fast.trainer.options import parse_options
from deps_fast.trainer.step import step_subnets, train_step

TINY = ["--width-mult", "0.25", "--batch-size", "64", "--calib-images", "64", "--calib-batch", "64",
        "--eval-every", "0", "--log-every", "100"]


def tiny(tmp_path, *extra, name="run"):
    return parse_options(TINY + ["--out", str(tmp_path / name)] + list(extra))


# ---- channel sort: the optimizer state moves with the weights (METHOD §3) ---------------------------------------
def _pair_order(w, m):
    """The order of the (w, m) element pairs sorted by w, then m (random floats can repeat in large tensors)."""
    w, m = w.flatten(), m.flatten()
    by_m = m.argsort(stable=True)
    return by_m[w[by_m].argsort(stable=True)]


def test_channel_sort_permutes_the_momentum_with_the_weights(tmp_path):
    trainer = Trainer(tiny(tmp_path, "--epochs", "0.15"))
    try:
        plan = next(trainer.schedule.plan(t) for t in range(trainer.schedule.total_steps())
                    if trainer.schedule.plan(t).phase.sort_channels and trainer.schedule.plan(t).phase_start)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in trainer.model.parameters():  # distinct values everywhere, so every pair is identifiable
                p.copy_(torch.randn(p.shape, generator=gen))
                trainer.optimizer.state[p]["momentum_buffer"] = torch.randn(p.shape, generator=gen)
        before = {n: (p.detach().clone(), trainer.optimizer.state[p]["momentum_buffer"].clone())
                  for n, p in trainer.model.named_parameters()}
        trainer.on_phase_start(plan)
        moved = 0
        for n, p in trainer.model.named_parameters():
            w0, m0 = before[n]
            w1, m1 = p.detach(), trainer.optimizer.state[p]["momentum_buffer"]
            # a channel permutation moves (weight, momentum) pairs together: the pairs, ordered by weight, agree
            o0, o1 = _pair_order(w0, m0), _pair_order(w1, m1)
            assert torch.equal(w0.flatten()[o0], w1.flatten()[o1]), f"{n}: the sort changed weight values"
            assert torch.equal(m0.flatten()[o0], m1.flatten()[o1]), f"{n}: momentum not permuted with the weight"
            moved += int(not torch.equal(w0, w1))
        assert moved > 0, "the sort moved no channel: the check above saw nothing"
    finally:
        trainer.close()


# ---- the step: max (dropout, label smoothing) + β·Σ subnets (no dropout in DεpS/BigNAS) ------------------------
class NoStep(torch.optim.SGD):
    """Leaves the accumulated gradient in .grad."""

    def step(self, closure=None):
        return None


@pytest.mark.parametrize("schedule", ["deps", "bignas"])
def test_step_gradient_with_dropout_against_plain_pytorch(schedule):
    """The step's gradient, rebuilt with plain PyTorch losses on a twin that runs the torch backend (not our
    kernels): the max net with dropout (the same masks: same RNG stream) and label-smoothed CE, each subnet
    without dropout, distilled from the max net's detached logits, weighted by β (DεpS) or 1 (BigNAS)."""
    torch.manual_seed(0)
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25, kernel_sizes=(3, 5, 7), dropout=0.5, in_channels=1)
    if schedule == "deps":
        sched = deps(10, lr=0.1, steps_per_epoch=4, eps_epochs=2)
        step = next(t for t in range(sched.total_steps()) if 0 < sched.beta_at(t) < 0.9)
    else:
        sched = bignas(10, lr=0.1, steps_per_epoch=4)
        step = sched.total_steps() // 2
    plan = sched.plan(step)
    x, y = torch.randn(6, 1, 12, 12), torch.randint(10, (6,))
    twin = copy.deepcopy(net).set_backend("torch")
    net.set_backend("cpp")
    # BNs on the CPU default (auto: the torch composition). The cpp BN+act kernels are value-checked op by op in
    # test_bn_act.py; here, with batch 6 and 1x1 late planes, a different fp32 rounding can put one element on
    # the other side of an activation kink, which moves this ill-conditioned gradient by ~1e-3 (seen once).
    for module in net.modules():
        if isinstance(module, ElasticBatchNorm2d):
            module.backend = "auto"
    torch.manual_seed(123)
    train_step(net, NoStep(net.parameters(), lr=0.1), plan, [(x, y)], seed=7, label_smoothing=0.1)

    torch.manual_seed(123)
    weight = plan.beta if schedule == "deps" else 1.0
    max_logits = twin(x, twin.max_config(), dropout=True)
    total = F.cross_entropy(max_logits, y, label_smoothing=0.1)
    teacher = max_logits.detach().softmax(1)
    configs = step_subnets(twin, plan, seed=7)
    assert [n for n, _ in configs] == ["min", "rand0", "rand1"]
    for _, config in configs:
        total = total + weight * -(teacher * twin(x, config, dropout=False).log_softmax(1)).sum(1).mean()
    total.backward()
    # per parameter, relative to its own gradient; gradients that vanish in exact arithmetic (a BN bias feeding
    # another BN) are float noise, measured against the whole gradient instead
    total_norm = torch.stack([q.grad.norm() for q in twin.parameters() if q.grad is not None]).norm()
    for (n, p), q in zip(net.named_parameters(), twin.parameters()):
        if q.grad is None or not q.grad.any():
            assert p.grad is None or torch.all(p.grad == 0), n
            continue
        err = (p.grad - q.grad).norm()
        assert err <= 1e-4 * q.grad.norm() + 1e-6 * total_norm, \
            f"{n}: gradient error {err:.2e} (norm {q.grad.norm():.2e}, total {total_norm:.2e})"


# ---- OFA: the frozen teacher survives a resume --------------------------------------------------------------
def test_ofa_resume_restores_the_frozen_teacher(tmp_path):
    args = ["--schedule", "ofa", "--epochs", "0.1"]  # phases: teacher steps 0-1, then the kernel phase from step 2
    assert train(tiny(tmp_path, *args, "--stop-after-steps", "2")) is None
    teacher_weights = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")[0]["model"]  # full model at step 2
    assert train(tiny(tmp_path, *args, "--stop-after-steps", "4", "--resume")) is None
    trainer = Trainer(tiny(tmp_path, *args, "--resume"))
    try:
        assert trainer.step == 4 and trainer.teacher is not None
        model_now = trainer.model.state_dict()
        assert any(not torch.equal(model_now[k], teacher_weights[k]) for k in teacher_weights), \
            "the model did not move after the teacher froze: the check below saw nothing"
        for k, v in trainer.teacher.state_dict().items():
            assert torch.equal(v, teacher_weights[k]), f"teacher {k} is not the full model frozen at step 2"
        assert not any(p.requires_grad for p in trainer.teacher.parameters())
    finally:
        trainer.close()


# ---- evaluation recalibrates BN on the calibration batches ----------------------------------------------------
def test_evaluation_recalibrates_bn_on_the_calibration_batches():
    torch.manual_seed(0)
    model = build_supernet("mbv3-cifar", 10, width_mult=0.25, dropout=0.0, in_channels=1)
    with torch.no_grad():  # stale statistics, far from anything the data gives
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-5, 5)
                m.running_var.uniform_(50, 100)
    config = model.min_config()
    xc = torch.randn(32, 1, 16, 16)
    # one calibration batch: recalibrated eval-mode BN normalizes exactly like train-mode BN on that batch
    with torch.no_grad():
        expected = copy.deepcopy(model.extract(config)).train()(xc).argmax(1)
        stale = model.extract(config).eval()(xc).argmax(1)
    assert not torch.equal(expected, stale), "stale statistics predict alike: the check would see nothing"
    top1 = evaluate_subnet(model, config, [xc], [(xc, expected)], torch.device("cpu"))
    assert top1 == 100.0


# ---- calibration batches carry the training augmentation -----------------------------------------------------
def test_calibration_batches_are_pad_crop_flips_of_the_chosen_training_images():
    data = load_dataset("mnist5k")
    n, seed = 24, 5
    (batch,) = data.calibration_batches(n_images=n, batch_size=n, seed=seed)
    chosen = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(seed))[:n]
    sources = data.train_images[chosen].float()  # uint8 -> float, values 0..255
    images = (batch * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)) * 255
    assert torch.allclose(images, images.round(), atol=1e-3)
    images = images.round()
    pad, H, W = data.pad, sources.shape[2], sources.shape[3]
    padded = F.pad(sources, (pad, pad, pad, pad))
    variants = torch.stack([v for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                            for crop in [padded[:, :, dy:dy + H, dx:dx + W]]
                            for v in ([crop, crop.flip(-1)] if data.flip else [crop])], 1)  # [n, variants, ...]
    # every calibration image is one augmented variant of one chosen image; some are not the plain image
    matches = (images[:, None, None] == variants[None]).flatten(3).all(-1)  # [image, source, variant]
    assert matches.any(-1).any(-1).all(), "a calibration image is no pad-crop(-flip) of the chosen images"
    plain = (images[:, None] == sources[None]).flatten(2).all(-1).any(-1)
    assert plain.sum() < n // 2, f"{int(plain.sum())} of {n} calibration images are not augmented"


# ---- subnet passes update the shared BN running statistics --------------------------------------------------
def test_subnet_forward_updates_the_shared_running_statistics_in_place():
    torch.manual_seed(0)
    model = build_supernet("mbv3-cifar", 10, width_mult=0.25, in_channels=1).train()
    config = model.min_config()
    inputs, before = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            before[name] = (m.running_mean.clone(), m.running_var.clone(), m.momentum)
            m.register_forward_hook(lambda mod, args, out, name=name: inputs.setdefault(name, args[0].detach()))
    model(torch.randn(8, 1, 16, 16), config)
    partial = 0
    for name, m in model.named_modules():
        if name not in inputs:
            continue
        x = inputs[name].double()
        c = x.shape[1]
        mean0, var0, momentum = before[name]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)
        torch.testing.assert_close(m.running_mean[:c].double(), (1 - momentum) * mean0[:c] + momentum * mean,
                                   rtol=1e-5, atol=1e-6, msg=f"{name}: running mean")
        torch.testing.assert_close(m.running_var[:c].double(), (1 - momentum) * var0[:c] + momentum * var,
                                   rtol=1e-5, atol=1e-6, msg=f"{name}: running var")
        assert torch.equal(m.running_mean[c:], before[name][0][c:]), f"{name}: unused channels changed"
        partial += c < m.num_features
    assert partial > 0, "no BN ran at partial width"


# ---- --resume refuses a checkpoint written with other fixed options ----------------------------------------------
FIXED = [("--weight-decay", "1e-3", "weight_decay"), ("--dropout", "0.3", "dropout"),
         ("--label-smoothing", "0.0", "label_smoothing"), ("--seed", "1", "seed"), ("--momentum", "0.8", "momentum"),
         ("--width-mult", "0.3", "width_mult"), ("--batch-size", "32", "batch_size")]


def test_resume_refuses_changed_options_and_accepts_a_new_lr(tmp_path):
    assert train(tiny(tmp_path, "--epochs", "0.05", "--stop-after-steps", "1")) is None
    for flag, value, name in FIXED:
        with pytest.raises(ValueError, match=rf"different \[.*'{name}'.*\].*{name}="):
            Trainer(tiny(tmp_path, "--epochs", "0.05", "--resume", flag, value)).close()
    with pytest.warns(RuntimeWarning, match="lr changed from 0.1 to 0.05"):
        trainer = Trainer(tiny(tmp_path, "--epochs", "0.05", "--resume", "--lr", "0.05"))
    trainer.close()


# ---- weight decay: conv and linear weights only ------------------------------------------------------------
def test_weight_decay_only_on_conv_and_linear_weights(tmp_path):
    trainer = Trainer(tiny(tmp_path, "--epochs", "0.05", "--schedule", "ofa", "--weight-decay", "0.5"))
    try:
        model = trainer.model
        decayed = set()  # by module type, not by the trainer's rule: the "weight" of every non-BN module
        for module in model.modules():
            for pname, p in module.named_parameters(recurse=False):
                if pname == "weight" and not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    decayed.add(id(p))
        assert any("transforms" in n for n, _ in model.named_parameters()), "no transform matrices to check"
        with torch.no_grad():
            before = {n: p.clone() for n, p in model.named_parameters()}
        for group in trainer.optimizer.param_groups:
            group["lr"], group["momentum"], group["nesterov"] = 1.0, 0.0, False
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        trainer.optimizer.step()  # a zero gradient: only weight decay moves anything
        for n, p in model.named_parameters():
            if id(p) in decayed:
                torch.testing.assert_close(p, before[n] * 0.5, msg=f"{n} was not decayed")
            else:
                assert torch.equal(p, before[n]), f"{n} (BN, bias or transform) was decayed"
    finally:
        trainer.close()


# ---- --amp: the nets run under autocast (CPU autocast in bf16 here), the run trains and reports --------------
def test_amp_bf16_runs_the_nets_in_bf16_and_finishes(tmp_path, monkeypatch):
    from deps_fast.trainer import step as step_module
    seen = []
    real = step_module.distillation_loss

    def spy(logits, *args, **kwargs):
        seen.append(logits.dtype)
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(step_module, "distillation_loss", spy)
    report = train(tiny(tmp_path, "--epochs", "0.1", "--amp", "bf16", "--calib-images", "64"))
    assert seen and set(seen) == {torch.bfloat16}, f"logits dtypes under --amp bf16: {set(seen)}"
    state, _ = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values()), "weights must stay float32"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert report is not None and all(0 <= s["top1"] <= 100 for s in report["subnets"])
