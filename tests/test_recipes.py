"""The authors' and OFA's recipes as the presets build them (docs/method.md §3-4, §7), checked against numbers
computed by hand from their formulas: LRs, E_fm and the ε-ramp, the staged channel sort, augmentation,
elastic resolution, and --plan."""
import json
import types

import pytest
import torch

from deps_fast.models import build_supernet
from deps_fast.models.config import make_divisible
from deps_fast.models.reorganize import staged_importance
from deps_fast.train import main
from deps_fast.trainer import datasets
from deps_fast.trainer.loaders import ElasticResolution, elastic_sizes
from deps_fast.trainer.options import parse_options

from helpers import seed


def plan_json(argv, capsys):
    assert main(argv + ["--plan-json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ presets
def test_imagenet_deps_preset_is_the_authors_run(capsys):
    plan = plan_json(["--preset", "imagenet", "--data", "/nowhere/imagenet"], capsys)  # --plan reads no data
    # 0.1625 per 128 images, linear scaling to 2048: 2.6; no warmup; E_fm = 150 of 270, ramp 145-150
    assert plan["peak_lr"] == pytest.approx(0.1625 * 2048 / 128) and plan["batch_size"] == 2048
    assert plan["warmup_epochs"] == 0 and plan["fm_epochs"] == pytest.approx(150)
    assert plan["eps_ramp_epochs"] == pytest.approx([145, 150]) and plan["total_epochs"] == pytest.approx(270)
    assert plan["steps_per_epoch"] == 1281167 // 2048 and "1,281,167" in plan["train_images_note"]
    phases = {p["name"]: p for p in plan["phases"]}
    assert phases["fm_warmup"]["epochs"] == pytest.approx(145) and phases["eps_ramp"]["channel_sort_stage"] == 1
    assert plan["augment"] == "deps" and plan["resolution_policy"] == "fixed"
    # η(E_fm) from the live curve: 2.6 (0.01 + 0.99 (1 + cos(π t / (T - 1))) / 2) at the first step of epoch 150
    steps, t = plan["total_steps"], phases["shrink"]["first_step"]
    import math
    assert plan["eta_at_fm"] == pytest.approx(2.6 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / (steps - 1)))))


def test_imagenet_ofa_preset_is_ofas_recipe(capsys):
    plan = plan_json(["--preset", "imagenet", "--data", "/nowhere/imagenet", "--schedule", "ofa"], capsys)
    phases = {p["name"]: p for p in plan["phases"]}
    # the teacher (full model) at 2.6 for 180 epochs, then OFA's 0.96 / 0.08 / 0.24 at batch 2048
    assert [phases[n]["peak_lr"] for n in ("teacher", "kernel", "depth_34", "depth_234", "expand_46", "expand_346")] \
        == pytest.approx([2.6, 0.96, 0.08, 0.24, 0.08, 0.24])
    assert phases["teacher"]["epochs"] == pytest.approx(180) and phases["teacher"]["warmup_epochs"] == 0
    assert [phases["expand_46"]["channel_sort_stage"], phases["expand_346"]["channel_sort_stage"]] == [0, 1]
    assert plan["resolution_policy"] == "elastic 128-224 step 4" and plan["augment"] == "ofa"
    assert plan["fm_epochs"] is None


def test_cifar_ramp_is_the_authors_five_epochs(capsys):
    plan = plan_json(["--preset", "cifar10"], capsys)
    assert plan["total_epochs"] == pytest.approx(200) and plan["eps_ramp_epochs"] == pytest.approx([95, 100])
    scaled = plan_json(["--preset", "cifar10", "--budget-scale", "0.1"], capsys)
    assert scaled["eps_ramp_epochs"] == pytest.approx([9.5, 10])  # only the budget scale shortens it
    ofa = plan_json(["--preset", "cifar10", "--schedule", "ofa"], capsys)
    assert ofa["total_epochs"] == pytest.approx(605 * 200 / 270)


def test_preset_values_apply_per_schedule_and_flags_still_win():
    deps = parse_options(["--preset", "imagenet", "--data", "/x"])
    ofa = parse_options(["--preset", "imagenet", "--data", "/x", "--schedule", "ofa"])
    assert (deps.augment, deps.elastic_resolution, deps.fm_fraction) == ("deps", None, pytest.approx(150 / 270))
    assert (ofa.augment, ofa.elastic_resolution, ofa.fm_fraction) == ("ofa", (128, 224, 4), 0.5)
    mine = parse_options(["--preset", "imagenet", "--data", "/x", "--schedule", "ofa", "--elastic-resolution",
                          "160,224,32"])
    assert mine.elastic_resolution == (160, 224, 32)


def test_plan_text_names_what_matters(capsys):
    assert main(["--preset", "imagenet", "--data", "/nowhere", "--plan"]) == 0
    text = capsys.readouterr().out
    for needle in ("E_fm = 150 epochs", "ε-ramp epochs 145-150", "peak LR 2.6", "warmup 0 epochs",
                   "channel sort (stage 1)", "resolution fixed", "1,281,167"):
        assert needle in text, needle


# ----------------------------------------------------------------------------------------- staged sort
def test_ofa_stage_one_sort_by_hand_in_float64():
    net = build_supernet("mbv3-cifar", 10, width_mult=0.5).double()
    block = net.blocks[1]  # a stage's second block: in_ch = its width
    gen = torch.Generator().manual_seed(seed())
    with torch.no_grad():
        block.project.weight.copy_(torch.randn(block.project.weight.shape, generator=gen, dtype=torch.float64))
    weight = block.project.weight.detach().clone()
    # OFA: widths of e = 6, 4, 3 from the block's input width; stage 1 adds -2e5 to [w4, w6) and keeps [0, w4)
    w6, w4, w3 = (make_divisible(round(block.in_ch * e), 8) for e in (6, 4, 3))
    assert w6 > w4 > w3 and weight.shape[1] == w6
    importance = weight.abs().sum((0, 2, 3))
    expected = importance.clone()
    expected[w4:w6] += -3e5 + 1e5
    torch.testing.assert_close(staged_importance(block, stage=1), expected, rtol=0, atol=0)
    torch.testing.assert_close(staged_importance(block, stage=0), importance, rtol=0, atol=0)
    # the sort: each band sorted within itself, the [w4, w6) band behind the e = 4 prefix
    order = torch.cat([torch.sort(importance[:w4], descending=True, stable=True).indices,
                       w4 + torch.sort(importance[w4:], descending=True, stable=True).indices])
    net.reorganize_channels(stage=1)
    torch.testing.assert_close(block.project.weight.detach(), weight[:, order], rtol=0, atol=0)
    glob = build_supernet("mbv3-cifar", 10, width_mult=0.5).double()
    with torch.no_grad():
        glob.blocks[1].project.weight.copy_(weight)
    glob.reorganize_channels(stage=0)
    global_order = torch.sort(importance, descending=True, stable=True).indices
    torch.testing.assert_close(glob.blocks[1].project.weight.detach(), weight[:, global_order], rtol=0, atol=0)
    assert not torch.equal(order, global_order)  # the test can tell the stages apart


def test_trainer_sorts_at_the_schedules_stage(tmp_path, monkeypatch):
    from deps_fast.trainer.loop import Trainer
    calls = []
    monkeypatch.setattr(type(build_supernet("mbv3-cifar", 10)), "reorganize_channels",
                        lambda self, optimizer=None, stage=0: calls.append((optimizer, stage)))
    o = parse_options(["--epochs", "1", "--out", str(tmp_path / "run"), "--calib-images", "50", "--sort-stage", "0"])
    trainer = Trainer(o)
    names = [p.name for p in trainer.schedule.phases]
    for index, phase in enumerate(trainer.schedule.phases):
        trainer.on_phase_start(trainer.schedule.plan(trainer.schedule.phase_bounds(index)[0]))
    assert calls == [(trainer.optimizer, 0)]  # once, on the ε-ramp's first step, with the optimizer's state
    assert names == ["fm_warmup", "eps_ramp", "shrink"]
    assert trainer.report([], 0.0).run.sort_stages == "eps_ramp: stage 0"


# ----------------------------------------------------------------------------------------- augmentation
def recording_torchvision():
    """A torchvision stand-in whose transforms record their class and arguments."""
    def make(name):
        return lambda *args, **kwargs: (name, args, tuple(sorted(kwargs.items())))
    names = ("RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "ToTensor", "Normalize", "RandomErasing",
             "Resize", "CenterCrop", "AutoAugment")
    transforms = types.SimpleNamespace(**{n: make(n) for n in names}, Compose=lambda fs: fs,
                                       AutoAugmentPolicy=types.SimpleNamespace(IMAGENET="imagenet"),
                                       InterpolationMode=types.SimpleNamespace(BILINEAR="bilinear"))
    return types.SimpleNamespace(transforms=transforms)


@pytest.mark.parametrize("augment, expected", [
    ("standard", ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]),
    ("deps", ["RandomResizedCrop", "RandomHorizontalFlip", "AutoAugment", "ColorJitter", "ToTensor", "Normalize",
              "RandomErasing"]),
    ("ofa", ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "ToTensor", "Normalize"]),
])
def test_augmentation_recipes(augment, expected, tmp_path, monkeypatch):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
    monkeypatch.setattr(datasets, "_import_torchvision", recording_torchvision)
    data = datasets.load_dataset(str(tmp_path), augment=augment, resolution=192)
    pipeline = data._transform(train=True)
    assert [step[0] for step in pipeline] == expected
    steps = {step[0]: step for step in pipeline}
    assert steps["RandomResizedCrop"][1] == (192,)
    if augment == "deps":
        assert steps["ColorJitter"][1] == (0.4, 0.4, 0.4, 0.1) and dict(steps["RandomErasing"][2]) == {"p": 0.2}
        assert steps["AutoAugment"][1] == ("imagenet",)
    if augment == "ofa":
        assert dict(steps["ColorJitter"][2]) == {"brightness": 32 / 255, "saturation": 0.5}


def test_imagenet_recipes_are_refused_for_on_device_sets():
    with pytest.raises(ValueError, match="augment='deps' is an ImageFolder"):
        datasets.load_dataset("mnist5k", augment="deps")


# ----------------------------------------------------------------------------------------- elastic resolution
def test_elastic_resolution_draws_per_batch_the_same_on_every_rank():
    data = datasets.load_dataset("mnist5k")
    sizes = elastic_sizes((16, 28, 4))
    assert sizes == (16, 20, 24, 28)
    ranks = [data.train_loader(64, rank=r, world_size=2, seed=3, elastic_resolution=(16, 28, 4)) for r in (0, 1)]
    assert isinstance(ranks[0], ElasticResolution) and len(ranks[0]) == len(data.train_loader(64))
    drawn = []
    for index in range(len(ranks[0])):
        x0, _ = ranks[0].batch(0, index)
        x1, _ = ranks[1].batch(0, index)
        assert x0.shape[-1] == x1.shape[-1] == x0.shape[-2] and x0.shape[0] == 32
        drawn.append(x0.shape[-1])
    assert set(drawn) <= set(sizes) and len(set(drawn)) > 1  # 31 batches draw several sizes
    again = data.train_loader(64, seed=3, elastic_resolution=(16, 28, 4))
    assert [again.batch(0, i)[0].shape[-1] for i in range(len(again))] == drawn  # a pure function of the numbers


def test_elastic_resolution_is_refused_when_malformed():
    for bad in (["--elastic-resolution", "224,128,4"], ["--elastic-resolution", "128,224"]):
        with pytest.raises(ValueError, match="elastic_resolution"):
            parse_options(bad)
