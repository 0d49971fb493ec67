"""Training never loses work, and a user's mistake never ends in a traceback (issue 13): each case is a fault
or a bad input that was crashed, silent or lost work before, tried as a user would (the CLI, real files, real
signals and processes where it matters)."""
import copy
import dataclasses
import errno
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch

import deps_fast
from deps_fast.models import SubnetConfig, build_supernet, load_ofa_state_dict, to_ofa_state_dict
from deps_fast.schedules import deps
from deps_fast.train import main
from deps_fast.trainer import checkpoint as ckpt
from deps_fast.trainer import datasets, rundir
from deps_fast.trainer import step as step_module
from deps_fast.trainer.loop import DivergedError, Trainer
from deps_fast.trainer.options import parse_options
from deps_fast.trainer.step import train_step

TINY = ["--width-mult", "0.25", "--batch-size", "64", "--calib-images", "64", "--calib-batch", "64",
        "--eval-every", "0", "--log-every", "100"]


def run_cli(capsys, *argv):
    """(exit status, stderr) of `python -m deps_fast.train argv` run in this process."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse
        status = exc.code
    return status, capsys.readouterr().err


def steps_in_metrics(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "step"]


# ------------------------------------------------------------------------------ 1. checkpoints never lost
def test_resume_refuses_when_every_checkpoint_is_damaged_and_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--ckpt-every", "1",
                   "--stop-after-steps", "3")[0] == 0
    files = [p for _, p in ckpt.list_checkpoints(out / "checkpoints")]
    assert len(files) == 3
    for path in files:  # one flipped byte each
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    foreign = ckpt.checkpoint_path(out / "checkpoints", 99)
    torch.save({"mine": True}, foreign)  # a user's own file named like a checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--resume")
    assert status == 2 and "no usable checkpoint" in err and "nothing was deleted" in err
    for path in files + [foreign]:
        assert path.name in err and path.exists()
    assert oct(files[0].stat().st_mode & 0o777) != oct(0o600)  # the umask's mode, not mkstemp's 0600


def test_a_run_keeps_foreign_files_and_never_prunes_what_it_cannot_verify(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--stop-after-steps", "1")[0] == 0
    foreign = ckpt.checkpoint_path(out / "checkpoints", 99)
    foreign.write_bytes(b"not a checkpoint at all")  # a user's file named like a newer checkpoint
    with pytest.warns(RuntimeWarning, match="--overwrite kept"):
        assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--ckpt-every", "1",
                       "--keep-checkpoints", "1", "--stop-after-steps", "4", "--overwrite")[0] == 0
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [99, 4]  # pruned to 1 of ours


# --------------------------------------------------------------------------------------- 2. divergence
def test_divergence_aborts_clearly_keeps_a_good_checkpoint_and_resumes_with_a_lower_lr(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.15", "--lr", "1e4", "--ckpt-every", "1",
                          "--max-bad-steps", "2")
    assert status == 2 and "training diverged" in err and "--resume --lr" in err and "Traceback" not in err
    kept = ckpt.list_checkpoints(out / "checkpoints")
    assert kept, "no good checkpoint was kept"
    for _, path in kept:  # never a non-finite weight on disk
        state = ckpt.load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "report.json").exists()  # nothing evaluated or reported from diverged weights
    # the advice works: a lower --lr on --resume is accepted, warned about and recorded (lr 1e4 wrecked the
    # weights in one step, so the resumed steps may still be skipped: --max-bad-steps lets it run to the end)
    with pytest.warns(RuntimeWarning, match="lr changed from 10000.0 to 0.05"):
        status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.15", "--lr", "0.05", "--resume",
                              "--max-bad-steps", "100")
    assert status == 0, err
    config = json.loads((out / "config.json").read_text())
    assert [h["lr"] for h in config["lr_history"]] == [1e4, 0.05]
    report = json.loads((out / "report.json").read_text())
    assert "10000 -> 0.05 at step" in report["run"]["lr_changes"]


def test_a_loss_spike_skips_the_update_and_restores_bn_statistics():
    torch.manual_seed(0)
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25, kernel_sizes=(3, 5, 7), dropout=0.0, in_channels=1)
    plan = deps(10, lr=0.1, steps_per_epoch=4, eps_epochs=2).plan(0)  # full-model warm-up: one loss, "max"
    x, y = torch.randn(8, 1, 12, 12), torch.randint(10, (8,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    before = copy.deepcopy(net.state_dict())
    result = train_step(net, optimizer, plan, [(x, y)], seed=0, label_smoothing=0.0, max_loss={"max": 1e-3})
    assert not result.finite and set(result.losses) == {"max"} and result.losses["max"] > 1e-3
    for name, value in net.state_dict().items():  # weights, BN running statistics and counters untouched
        assert torch.equal(value, before[name]), name
    assert not optimizer.state  # no momentum buffer was created by the skipped step
    result = train_step(net, optimizer, plan, [(x, y)], seed=0, label_smoothing=0.0, max_loss={"max": 1e3})
    moved = [n for n, v in net.state_dict().items() if not torch.equal(v, before[n])]
    assert result.finite and any("running_mean" in n for n in moved) and any("weight" in n for n in moved)


def test_a_finite_blow_up_from_the_start_stops_without_saving_and_says_start_again(tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per skipped step
        status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.3", "--lr", "30",
                              "--ckpt-every", "2")
    assert status == 2 and "skipped steps in a row" in err and "--overwrite --lr 3" in err and "None" not in err
    assert not ckpt.list_checkpoints(out / "checkpoints")  # the only steps applied made the weights blow up


def test_spike_threshold_is_per_loss_name_with_a_floor(tmp_path):
    trainer = Trainer(parse_options(TINY + ["--out", str(tmp_path / "run"), "--epochs", "0.1"]))
    try:
        trainer.accepted_losses = {"max": [0.1, 0.3, 0.2], "min": [1.0, 3.0, 2.0], "rand0": []}
        floor = 2 * math.log(10)  # twice a uniform guess's cross-entropy on 10 classes
        assert trainer._spike_threshold() == pytest.approx({"max": floor, "min": 10 * 2.0})
        trainer.options = dataclasses.replace(trainer.options, spike_factor=0.0)
        assert trainer._spike_threshold() == {}
    finally:
        trainer.close()


def test_non_finite_weights_are_never_evaluated(tmp_path):
    trainer = Trainer(parse_options(TINY + ["--out", str(tmp_path / "run"), "--epochs", "0.1"]))
    try:
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
        with pytest.raises(DivergedError, match="non-finite"):
            trainer.finish()
    finally:
        trainer.close()


# ------------------------------------------------------------------------------- 3 & 4. one run per folder
def test_reusing_an_out_without_resume_is_refused_and_the_default_out_gets_a_new_folder(tmp_path, capsys,
                                                                                         monkeypatch):
    out = tmp_path / "run"
    assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.1", "--stop-after-steps", "1")[0] == 0
    status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.1")
    assert status == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run_cli(capsys, *TINY, "--epochs", "0.1", "--stop-after-steps", "1")[0] == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["deps-mbv3-cifar-mnist5k",
                                                                     "deps-mbv3-cifar-mnist5k-2"]
    assert rundir.default_folder(Path("runs/deps-mbv3-cifar-mnist5k"), resume=True).name.endswith("-2")


def test_a_second_trainer_on_the_same_folder_stops_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "deps_fast.train", *TINY, "--out", str(out), "--epochs", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / ".lock").exists() or \
                b"process" not in (out / ".lock").read_bytes():
            time.sleep(0.2)
        status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "2", "--resume")
        assert status == 2 and f"in use by process {first.pid}" in err
    finally:
        first.kill()
        first.wait()
    # a crashed (killed) holder leaves a stale lock file that no longer holds anyone
    lock = rundir.RunLock(out)
    lock.release()


# ------------------------------------------------------------------------------ 5. mistakes exit 2, one line
def write_cifar(folder: Path, broken=None):
    folder.mkdir(parents=True)
    batch = {b"data": torch.randint(0, 255, (20, 3072), dtype=torch.uint8).numpy(), b"labels": list(range(10)) * 2}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    if broken == "garbage":
        (folder / "data_batch_3").write_bytes(b"_garbage_")
    elif broken == "truncated":
        (folder / "data_batch_3").write_bytes(pickle.dumps(batch)[:100])
    elif broken == "empty":
        (folder / "data_batch_3").write_bytes(b"")


@pytest.mark.parametrize("broken", ["garbage", "truncated", "empty"])
def test_damaged_cifar_files_are_named(tmp_path, capsys, broken):
    write_cifar(tmp_path / "cifar-10-batches-py", broken)
    status, err = run_cli(capsys, "--data", str(tmp_path / "cifar-10-batches-py"), "--out", str(tmp_path / "o"))
    assert status == 2 and "data_batch_3" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--width-mult", "inf"], "width"), (["--width-mult", "nan"], "width"), (["--eval-every", "-1"], "eval_every"),
    (["--weight-decay", "inf"], "weight_decay"), (["--workers", "-1"], "workers"),
    (["--out", "/proc/deps_fast_nowhere"], "cannot be written"), (["--out", "/etc/passwd/x"], "cannot be written"),
    (["--device", "meta"], "cannot train"), (["--seed", str(2 ** 64)], "seed"), (["--sort-stage", "99"], "sort_stage"),
    (["--resume", "--overwrite"], "not both"), (["--spike-factor", "-1"], "spike_factor"),
])
def test_bad_flags_exit_2_naming_the_option(tmp_path, capsys, argv, needle):
    status, err = run_cli(capsys, *argv)
    assert status == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("line, needle", [
    ("batch_size: abc", "batch_size"), ("lr: '0.1'", "lr"), ("fm_fraction: '0.5'", "fm_fraction"),
    ("data: 5", "data"), ("out: 5", "out"), ("keep_checkpoints: 0", "keep_checkpoints"),
    ("stop_after_steps: -1", "stop_after_steps"), ("max_bad_steps: 0", "max_bad_steps"), ("log_every: 0", "log_every"),
    ("resume: 'no'", "resume"), ("compare: x.json", "compare"), ("lr: -0.1", "lr"), ("seed: abc", "seed"),
])
def test_config_file_values_get_the_checks_flags_get(tmp_path, capsys, line, needle):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(line + "\n")
    status, err = run_cli(capsys, "--config", str(cfg), "--plan")  # --plan: a value that passed would not train
    assert status == 2 and needle in err and "Traceback" not in err


def test_config_that_is_a_folder_or_not_text_is_named(tmp_path, capsys):
    status, err = run_cli(capsys, "--config", str(tmp_path), "--plan")
    assert status == 2 and "is a directory" in err and "Traceback" not in err
    binary = tmp_path / "run.yaml"
    binary.write_bytes(b"lr: 0.1\n\xff\xfe\x00")
    status, err = run_cli(capsys, "--config", str(binary), "--plan")
    assert status == 2 and "UTF-8" in err and "Traceback" not in err


def test_preset_inside_a_config_file_applies(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("preset: cifar10\n")
    o = parse_options(["--config", str(cfg)])
    assert (o.data, o.width_mult, o.batch_size) == ("cifar10", 1.0, 256)


def fake_torchvision(bad=(), empty_class=False):
    """Images are files holding one number; names in `bad` make PIL's OSError; transforms pass through."""
    class ImageFolder(torch.utils.data.Dataset):
        def __init__(self, root, transform):
            classes = sorted(p.name for p in Path(root).iterdir())
            self.samples = [(str(f), label) for label, name in enumerate(classes)
                            for f in sorted((Path(root) / name).iterdir())]
            if empty_class and any(not list((Path(root) / c).iterdir()) for c in classes):
                raise FileNotFoundError("Found no valid file for the classes c. Supported extensions are: .jpg")

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, index):
            path, label = self.samples[index]
            if Path(path).name in bad:
                raise OSError(f"cannot identify image file {path!r}")
            return torch.full((3, 8, 8), float(Path(path).stem)), label

    passthrough = lambda *a, **k: (lambda x: x)  # noqa: E731
    transforms = types.SimpleNamespace(Compose=lambda fs: fs[0], RandomResizedCrop=passthrough,
                                       RandomHorizontalFlip=passthrough, ToTensor=passthrough, Normalize=passthrough,
                                       Resize=passthrough, CenterCrop=passthrough)
    return types.SimpleNamespace(transforms=transforms, datasets=types.SimpleNamespace(ImageFolder=ImageFolder))


def image_folder(root: Path, n=48):
    for split, count in (("train", n), ("val", 8)):
        for i in range(count):
            folder = root / split / "ab"[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(b"x")


def test_image_folder_with_an_empty_class_is_named(tmp_path, capsys, monkeypatch):
    image_folder(tmp_path / "data")
    (tmp_path / "data" / "train" / "c").mkdir()
    (tmp_path / "data" / "val" / "c").mkdir()
    monkeypatch.setattr(datasets, "_import_torchvision", lambda: fake_torchvision(empty_class=True))
    status, err = run_cli(capsys, "--data", str(tmp_path / "data"), "--workers", "0", "--out", str(tmp_path / "o"))
    assert status == 2 and "train" in err and "no valid file" in err


def test_a_corrupt_image_is_named_and_can_be_skipped(tmp_path, capsys, monkeypatch):
    image_folder(tmp_path / "data")
    monkeypatch.setattr(datasets, "_import_torchvision", lambda: fake_torchvision(bad={"7.jpg"}))
    argv = ["--data", str(tmp_path / "data"), "--workers", "0", "--resolution", "8", "--batch-size", "8",
            "--width-mult", "0.25", "--calib-images", "8", "--calib-batch", "8", "--eval-every", "0",
            "--epochs", "1", "--out", str(tmp_path / "o")]
    status, err = run_cli(capsys, *argv)
    assert status == 2 and "7.jpg" in err and "--skip-bad-images" in err and "Traceback" not in err
    assert ckpt.list_checkpoints(tmp_path / "o" / "checkpoints")  # the steps before it are saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status, err = run_cli(capsys, *argv, "--resume", "--skip-bad-images")
    assert status == 0, err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["run"]["skipped_images"] == 1


def test_image_folder_resume_mid_epoch_reads_the_images_a_straight_run_reads(tmp_path, monkeypatch):
    """ImageFolder data (a shuffled DataLoader, not a set held on the device): a run stopped in the middle of its
    epoch and resumed trains on exactly the images, in the order, of a run that was never stopped. (Its weights
    are not bit-identical: a new DataLoader iterator draws its base seed from the global RNG at the resume,
    which shifts the dropout masks; the loader documents that augmentation draws are not replayed either.)"""
    image_folder(tmp_path / "data")
    monkeypatch.setattr(datasets, "_import_torchvision", lambda: fake_torchvision())
    seen = {}
    real_batch = Trainer.batch

    def recording(self, step):
        x, y = real_batch(self, step)
        seen.setdefault(self.out.name, []).append((step, x[:, 0, 0, 0].tolist(), y.tolist()))  # the file numbers
        return x, y

    monkeypatch.setattr(Trainer, "batch", recording)
    argv = ["--data", str(tmp_path / "data"), "--workers", "0", "--resolution", "8", "--batch-size", "8",
            "--width-mult", "0.25", "--calib-images", "8", "--calib-batch", "8", "--eval-every", "0",
            "--epochs", "2", "--log-every", "100"]
    from deps_fast.trainer.loop import train
    train(parse_options(argv + ["--out", str(tmp_path / "straight")]))
    assert train(parse_options(argv + ["--out", str(tmp_path / "killed"), "--stop-after-steps", "3"])) is None
    train(parse_options(argv + ["--out", str(tmp_path / "killed"), "--resume"]))
    straight, killed = seen["straight"], seen["killed"]
    assert [s for s, _, _ in straight] == [s for s, _, _ in killed] == list(range(12))
    assert straight == killed, "the resumed run read other images or another order"
    first_epoch = sorted(v for _, xs, _ in straight[:6] for v in xs)
    assert len(set(first_epoch)) == 48, "an epoch must read every image once"
    assert [xs for _, xs, _ in straight[:6]] != [xs for _, xs, _ in straight[6:]], "epoch 2 must be reshuffled"


def test_disk_full_names_the_path_keeps_training_and_a_failed_final_save_exits_2(tmp_path, capsys, monkeypatch):
    real = ckpt.atomic_write
    calls = {"n": 0}

    def flaky(path, chunks, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint fits, every later one does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, chunks, **kw)

    monkeypatch.setattr(ckpt, "atomic_write", flaky)
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match=r"cannot write checkpoint .*ckpt-000000002\.pt.*bytes needed"):
        status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.1", "--ckpt-every", "1")
    assert status == 2 and "could not be saved" in err
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [1]  # the good one is intact


def test_disk_full_on_a_real_tmpfs(tmp_path, capsys):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status, err = run_cli(capsys, *TINY, "--out", str(mount / "run"), "--epochs", "0.1", "--ckpt-every", "1")
        assert status == 2 and "bytes needed" in err and "Traceback" not in err
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------------------------------- 7. SIGTERM timing
def test_sigterm_checkpoints_right_after_the_step_in_progress(tmp_path, monkeypatch, capsys):
    real = step_module.train_step
    seen = []

    def signalled(model, optimizer, plan, *args, **kwargs):
        seen.append(plan.step)
        if plan.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 2
        return real(model, optimizer, plan, *args, **kwargs)

    monkeypatch.setattr("deps_fast.trainer.loop.train_step", signalled)
    out = tmp_path / "run"
    status, err = run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.3")
    assert status == 0 and "from the signal to the checkpoint" in err
    assert seen == [0, 1, 2]  # no step started after the signal
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")][0] == 3


# ------------------------------------------------------------------------------------------ 9. run outputs
def test_metrics_after_a_kill_and_resume_hold_each_step_once_and_are_strict_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--ckpt-every", "2",
                   "--stop-after-steps", "5")[0] == 0
    ckpt.checkpoint_path(out / "checkpoints", 5).unlink()  # as if killed before the step-5 checkpoint
    assert run_cli(capsys, *TINY, "--out", str(out), "--epochs", "0.2", "--resume", "--stop-after-steps", "6")[0] == 0
    steps = steps_in_metrics(out)
    assert steps == sorted(set(steps)) == list(range(6))

    def strict(constant):
        raise ValueError(f"bare {constant} in metrics.jsonl")
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=strict)


def test_losses_that_are_nan_are_written_as_null(tmp_path):
    from deps_fast.trainer.loop import _json_safe
    assert json.dumps(_json_safe({"losses": {"max": float("nan")}, "x": [float("inf"), 1.0]})) == \
        '{"losses": {"max": null}, "x": [null, 1.0]}'


# -------------------------------------------------------------------------------------------- 8 & 9. API
@pytest.mark.parametrize("backend", ["cpp", "torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET") else []))
def test_masked_logits_give_the_references_finite_loss(backend):
    student = torch.randn(4, 12)
    student[:, 6:] = float("-inf")  # masked classes
    target = torch.tensor([0, 1, 2, 5])
    ref = torch.nn.functional.cross_entropy(student, target, reduction="none")
    ours = deps_fast.distillation_loss(student, None, target, reduction="none", backend=backend)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_tiny_temperatures_are_refused_on_every_backend():
    s = torch.randn(3, 5)
    for backend in ("cpp", "torch"):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 1e-4, got 1e-10"):
            deps_fast.distillation_loss(s, s, None, temperature=1e-10, backend=backend)


def test_api_rough_edges_say_what_is_wrong():
    with pytest.raises(ValueError, match="ks"):
        SubnetConfig.from_dict({"ks": None, "es": [3], "ds": [2]})
    with pytest.raises(ValueError, match="ks"):
        SubnetConfig.from_dict({"ks": 7, "es": [3], "ds": [2]})
    for bad in (dict(width_mult=float("nan")), dict(width_mult=float("inf")), dict(width_mult=True),
                dict(in_channels=0), dict(in_channels=-1), dict(dropout="0.1")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_supernet("mbv3-cifar", 10, **bad)
    with pytest.raises(ValueError, match="deterministic"):
        deps_fast.elastic_depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), 3, deterministic="no")
    meta = torch.empty(3, 10, device="meta")
    assert deps_fast.distillation_loss(meta, None, torch.empty(3, dtype=torch.long, device="meta")).device.type == "meta"
    s = torch.randn(3, 10, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(deps_fast.distillation_loss(s, None, torch.tensor([0, 1, 2]), backend="cpp"), s,
                            create_graph=True)
    with pytest.raises(TypeError, match=r"batches\[0\]"):
        deps_fast.recalibrate_bn(build_supernet("mbv3-cifar", 10), None, [torch.randn(2, 3, 8, 8).numpy()])


def test_ofa_loader_refuses_meta_and_warns_about_nan_or_integer_weights():
    net = build_supernet("mbv3", 10)
    theirs = to_ofa_state_dict(net)
    with pytest.raises(ValueError, match="meta"):
        load_ofa_state_dict(net, {k: v.to("meta") for k, v in theirs.items()})
    nan = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in theirs.items()}
    with pytest.warns(UserWarning, match="NaN or inf"):
        load_ofa_state_dict(net, nan)
    ints = {k: (v.long() if v.is_floating_point() else v) for k, v in theirs.items()}
    with pytest.warns(UserWarning, match="integer tensors"):
        load_ofa_state_dict(net, ints)
