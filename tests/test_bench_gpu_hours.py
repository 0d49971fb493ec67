"""The savings study (bench/bench_gpu_hours.py): its arithmetic on hand-made numbers, and a tiny smoke run that
is then rerun to show finished runs are reused."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_gpu_hours.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_hours", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hours_to_reach_interpolates_the_first_crossing(bench):
    curve = [(1.0, 80.0), (2.0, 84.0), (4.0, 90.0)]
    assert bench.hours_to_reach(curve, 87.0) == (3.0, "interpolated")  # halfway from 84 to 90: 2 + 0.5 * 2
    assert bench.hours_to_reach(curve, 84.0) == (2.0, "interpolated")
    assert bench.hours_to_reach(curve, 75.0) == (1.0, "reached at or below the smallest budget run")
    assert bench.hours_to_reach(curve, 95.0) is None
    assert bench.hours_to_reach([(1.0, 80.0), (2.0, 86.0), (3.0, 83.0), (4.0, 88.0)], 85.0)[0] == \
        pytest.approx(1.0 + 5 / 6)  # the first crossing, not a later one


def records_by_hand(bench):
    rows = []
    for seed, shift in ((0, -0.5), (1, 0.5)):
        for scale, hours, acc in ((0.1, 1.0, 80.0), (0.2, 2.0, 85.0)):
            rows.append({"variant": "deps", "budget_scale": scale, "seed": seed, "device_hours": hours,
                         "epochs": 27 * scale, "smallest_top1": acc + shift, "mean_top1": acc + 1 + shift,
                         "largest_top1": acc + 5, "min_top1": acc, "comparison": "", "training_resolution": "fixed",
                         "run": "x"})
            rows.append({"variant": "ofa", "budget_scale": scale, "seed": seed, "device_hours": 2 * hours,
                         "epochs": 60.5 * scale, "smallest_top1": acc - 4 + shift, "mean_top1": acc - 3 + shift,
                         "largest_top1": acc + 5, "min_top1": acc, "comparison": "", "training_resolution": "fixed",
                         "run": "x"})
    return rows


def test_matched_costs_and_differences_by_hand(bench):
    records = records_by_hand(bench)
    aggregates = bench.aggregate(records)
    deps_small = [a for a in aggregates if a["variant"] == "deps" and a["budget_scale"] == 0.1][0]
    assert deps_small["smallest_top1"] == pytest.approx(80.0) and deps_small["smallest_top1_std"] == \
        pytest.approx(0.7071, abs=1e-4)
    matched = {(m["deps_budget_scale"], m["metric"]): m for m in bench.matched_costs(records, aggregates)
               if m["baseline"] == "ofa"}
    # OFA's curve: (2 h, 76), (4 h, 81) for D2-E3-K7; DεpS reaches 80 at 1 h: 2 + (80 - 76) / 5 * 2 = 3.6 h
    small = matched[(0.1, "smallest_top1")]
    assert small["baseline_device_hours"] == pytest.approx(3.6) and small["ratio"] == pytest.approx(3.6)
    assert small["seeds_reached"] == "2/2" and small["ratio_seed_mean"] == pytest.approx(3.6)
    assert matched[(0.2, "smallest_top1")]["how"] == "not reached within the budgets run"  # 85 > OFA's 81
    diffs = {(d["budget_scale"], d["metric"]): d for d in bench.differences(aggregates)}
    assert diffs[(0.1, "smallest_top1")]["deps_minus_other"] == pytest.approx(4.0)
    assert diffs[(0.1, "smallest_top1")]["verdict"] == "beyond the seed spread"
    assert diffs[(0.1, "largest_top1")]["verdict"] == "within the seed spread"  # identical numbers


def test_tiny_study_runs_and_a_rerun_reuses_it(bench, tmp_path, monkeypatch):
    # 0.0001 / 0.0002 of the budgets at 62 steps an epoch: a few steps per run (OFA: one per phase at least)
    argv = ["--budget-scales", "0.0001,0.0002", "--seeds", "0", "--schedules", "deps,ofa", "--device", "cpu",
            "--out", str(tmp_path), "--", "--width-mult", "0.25", "--batch-size", "64", "--calib-images", "32",
            "--eval-every", "0"]
    out = bench.main(argv)
    study = json.loads((out / "study.json").read_text())
    assert {(r["variant"], r["budget_scale"]) for r in study["runs"]} == \
        {(s, b) for s in ("deps", "ofa") for b in (0.0001, 0.0002)}
    assert len(study["matched"]) == 2 * 2  # two DεpS budgets x two metrics against OFA
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Device-hours a baseline needs to match DεpS" in (out / "study.md").read_text()
    monkeypatch.setattr(bench, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = json.loads((bench.main(argv) / "study.json").read_text())
    assert again["runs"] == study["runs"]
