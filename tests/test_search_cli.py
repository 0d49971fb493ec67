"""The specialization commands end to end on a tiny run: `python -m deps_fast.search` and
`python -m deps_fast.finetune`, their bad-input exits, the exports, and the search split of the data."""
import json
import subprocess
import sys

import pytest
import torch

from deps_fast.finetune import main as finetune_main
from deps_fast.models import SubnetConfig, build_supernet, to_ofa_state_dict
from deps_fast.search.cli import main as search_main
from deps_fast.search.export import export_subnet, load_subnet
from deps_fast.trainer import datasets as data
from deps_fast.trainer.checkpoint import save_checkpoint
from deps_fast.trainer.datasets import load_dataset
from deps_fast.trainer.options import Options
from test_data import fake_torchvision, make_image_folder

FAST = ["--n-subnets", "12", "--population", "12", "--generations", "4", "--search-images", "150",
        "--calib-images", "100", "--calib-batch", "50", "--predictor-epochs", "20", "--latency-repeats", "2",
        "--latency-warmup", "0", "--latency-check", "2", "--no-progress", "--device", "cpu"]


def make_run(root, *, with_checkpoint=True):
    """A run directory as the trainer writes it (config.json + a checkpoint), with a small mbv3-cifar at 12 px
    on the embedded digits and BN statistics that are not at their init values."""
    o = Options(width_mult=0.25, resolution=12, batch_size=64, calib_images=100, calib_batch=50, eval_batch=250)
    torch.manual_seed(0)
    net = build_supernet(o.space, 10, o.width_mult, o.resolved_kernel_sizes(), o.expand_ratios, o.depths,
                         dropout=o.dropout, in_channels=1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"options": o.to_dict()}))
    if with_checkpoint:
        save_checkpoint(run / "checkpoints", {"model": net.state_dict(), "step": 7, "options": o.to_dict()}, 7)
    return run, net


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_search_end_to_end_then_a_rerun_reuses_everything(tmp_path, capsys):
    run, net = make_run(tmp_path)
    args = ["--run", str(run), "--max-mflops", "1.6", "--max-latency-ms", "1000", "--no-onnx"] + FAST
    assert search_main(args) == 0
    out = run / "search"
    result = json.loads((out / "search.json").read_text())
    for name in ("search.md", "pareto.png", "evaluations.jsonl", "predictor.pt"):
        assert (out / name).is_file(), name
    assert result["evaluated"]["subnets"] == 12 and result["settings"]["search_images"] == 150
    assert result["latency_table"]["parts"] > 0 and result["latency_table"]["fit"]["checked_subnets"] == 2
    chosen = [r for r in result["subnets"] if r["kind"] == "chosen"]
    assert [r["name"] for r in chosen] == ["chosen: --max-mflops 1.6", "chosen: --max-latency-ms 1000",
                                           "chosen: all budgets together"]
    for row in chosen:
        config = SubnetConfig.from_dict(row["config"])
        assert row["mflops"] == pytest.approx(net.flops(config) / 1e6)
        assert 0 <= row["test_top1"] <= 100 and row["measured_latency_ms"] > 0
    assert chosen[0]["mflops"] <= 1.6 and chosen[2]["mflops"] <= 1.6
    assert {r["name"] for r in result["subnets"] if r["kind"] == "uniform"} >= {"D2-E3-K7 (min)", "D4-E6-K7 (max)"}
    assert len(result["comparisons"]) == 3 and len(result["exports"]) == 3
    assert all(e["torch_export_max_abs_diff"] <= 1e-4 for e in result["exports"])
    assert (out / "exports" / "max-mflops-1.6.pt2").is_file()
    front = result["fronts"]["mflops"]
    assert all(a["mflops"] < b["mflops"] and a["predicted_top1"] < b["predicted_top1"]
               for a, b in zip(front, front[1:]))

    capsys.readouterr()
    assert search_main(args + ["--no-export"]) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["latency_table"]["measured_now"] == 0 and again["predictor"].get("reused") == 1.0
    assert again["evaluated"]["reused_from_cache"] == 12
    assert [r["test_top1"] for r in again["subnets"]] == [r["test_top1"] for r in result["subnets"]]


def test_search_bad_input_exits_2_with_one_line(tmp_path, capsys):
    run, _ = make_run(tmp_path)
    (tmp_path / "b").mkdir()
    bare, _ = make_run(tmp_path / "b", with_checkpoint=False)
    cases = [
        (["--run", str(tmp_path / "nowhere")], "no such directory"),
        (["--run", str(bare)], "no valid checkpoint"),
        (["--run", str(tmp_path)], "no config.json"),
        (["--run", str(run), "--max-mflops", "0.001"], "--max-mflops 0.001 is infeasible: the smallest MFLOPs"),
        (["--run", str(run), "--max-params-m", "1e-6"], "--max-params-m 1e-06 is infeasible"),
        (["--run", str(run), "--max-mflops", "-3"], "argument --max-mflops: expected a positive float"),
        (["--run", str(run), "--n-subnets", "many"], "argument --n-subnets: expected a positive int"),
        (["--run", str(run), "--resolutions", "12,x"], "argument --resolutions"),
        (["--run", str(run), "--device", "tpu"], "--device 'tpu'"),
        (["--run", str(run), "--search-images", "4000"],
         "--search-images 4000: n_images must be an integer in [1, 3999]"),
        ([], "give --run RUN_DIR"),
        (["--ofa-checkpoint", str(tmp_path / "missing.pth"), "--space", "mbv3"], "no such file"),
    ]
    for argv, message in cases:
        assert exit_status(search_main, argv + ["--no-progress"]) == 2, argv
        assert message in one_error_line(capsys), argv
    assert not (run / "search" / "evaluations.jsonl").exists()  # an infeasible budget evaluates nothing


def exit_status(main, argv):
    """main's return value, or the code of the SystemExit argparse raises for a malformed flag."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_search_reads_an_ofa_checkpoint(tmp_path):
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25, kernel_sizes=(3, 5, 7), in_channels=1, dropout=0.0)
    file = tmp_path / "ofa_tiny.pth"
    torch.save({"state_dict": to_ofa_state_dict(net)}, file)
    args = ["--ofa-checkpoint", str(file), "--space", "mbv3-cifar", "--width-mult", "0.25", "--data", "mnist5k",
            "--resolutions", "12", "--out", str(tmp_path / "ofa"), "--no-export", "--max-params-m", "0.2"] + FAST
    assert search_main(args) == 0
    result = json.loads((tmp_path / "ofa" / "search" / "search.json").read_text())
    assert result["space"]["kernel_sizes"] == [3, 5, 7] and result["source"]["step"] is None
    assert all(r["params_m"] <= 0.2 for r in result["subnets"] if r["kind"] == "chosen")


def test_exports_equal_the_supernet(tmp_path):
    torch.manual_seed(1)
    net = build_supernet("mbv3-cifar", 10, width_mult=0.25, dropout=0.0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    config = SubnetConfig(net.sample_config(torch.Generator().manual_seed(3)).ks, (4,) * 20, (2, 3, 4, 3, 2), 16)
    record = export_subnet(net.extract(config), config, 3, tmp_path, "sub")
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = net(x, config)
        program = torch.export.load(str(tmp_path / "sub.pt2")).module()
        torch.testing.assert_close(program(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(load_subnet(net, tmp_path / "sub.json")(x), expected, rtol=1e-4, atol=1e-4)
    import onnx
    import onnxruntime

    onnx.checker.check_model(onnx.load(str(tmp_path / "sub.onnx")))
    session = onnxruntime.InferenceSession(str(tmp_path / "sub.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
    assert record["onnx_max_abs_diff"] <= 1e-4 and SubnetConfig.from_dict(record["config"]) == config


def test_finetune_reports_before_and_after_and_exports(tmp_path, capsys):
    run, net = make_run(tmp_path)
    subnet = tmp_path / "subnet.json"
    config = net.uniform_config(2, 4, 7)
    subnet.write_text(config.to_json())
    out = tmp_path / "ft"
    assert finetune_main(["--run", str(run), "--subnet", str(subnet), "--epochs", "0.1", "--out", str(out),
                          "--no-onnx", "--no-progress", "--device", "cpu"]) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert result["steps"] == 6 and result["subnet"] == "D2-E4-K7-R12"  # 0.1 of the 62 batches of 64 in an epoch
    assert 0 <= result["test_top1_before"] <= 100 and 0 <= result["test_top1_after"] <= 100
    assert (out / "finetuned.pt2").is_file() and result["export"]["torch_export_max_abs_diff"] <= 1e-4
    assert exit_status(finetune_main, ["--run", str(run), "--subnet", str(tmp_path / "none.json")]) == 2
    assert "no such file" in one_error_line(capsys)
    subnet.write_text(json.dumps({"ks": [7] * 3, "es": [4] * 3, "ds": [2]}))
    assert exit_status(finetune_main, ["--run", str(run), "--subnet", str(subnet), "--no-onnx"]) == 2
    assert "lengths" in one_error_line(capsys)


def test_the_commands_import_pymoo_and_onnx_only_when_they_use_them():
    code = ("import sys, deps_fast, deps_fast.search.cli, deps_fast.finetune\n"
            "print(sorted(m for m in ('pymoo', 'onnx', 'onnxscript', 'onnxruntime') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# ---- the search split ----------------------------------------------------------------------------------------
def test_search_split_holds_out_training_images_only():
    full = load_dataset("mnist5k")
    split = full.search_split(300, seed=4)
    assert len(split.test_labels) == 300 and len(split.train_labels) == len(full.train_labels) - 300
    held = {bytes(x.numpy()) for x in split.test_images}
    rest = {bytes(x.numpy()) for x in split.train_images}
    training = {bytes(x.numpy()) for x in full.train_images}
    assert held <= training and not held & rest
    assert not held & {bytes(x.numpy()) for x in full.test_images}  # the real test set stays out
    again = full.search_split(300, seed=4)
    assert torch.equal(again.test_images, split.test_images)
    assert not torch.equal(full.search_split(300, seed=5).test_images, split.test_images)
    with pytest.raises(ValueError, match="n_images must be an integer in \\[1, 3999\\]"):
        full.search_split(4000)


def test_search_split_of_an_image_folder(tmp_path, monkeypatch):
    make_image_folder(tmp_path, train_classes=("a", "b"), val_classes=("a", "b"))
    for number in range(12):
        split = "train" if number < 10 else "val"
        (tmp_path / split / "ab"[number % 2] / f"{number}.jpg").touch()
    monkeypatch.setattr(data, "_import_torchvision", fake_torchvision)
    ds = load_dataset(str(tmp_path), num_workers=0)
    split = ds.search_split(4, seed=0)
    held = [v for x, _ in split.test_loader(batch_size=3) for v in x[:, 0, 0, 0].tolist()]
    rest = [v for b in split.calibration_batches(n_images=100, batch_size=3) for v in b[:, 0, 0, 0].tolist()]
    assert len(held) == 4 and len(rest) == 6 and sorted(held + rest) == [float(i) for i in range(10)]
    assert [v for x, _ in ds.test_loader(batch_size=4) for v in x[:, 0, 0, 0].tolist()] == [10.0, 11.0]
