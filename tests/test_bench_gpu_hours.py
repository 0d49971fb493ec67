"""Smoke test of bench/bench_gpu_hours.py at a tiny scale: three schedules, one comparison table."""
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_gpu_hours.py"


def test_gpu_hours_benchmark_runs_three_schedules_and_compares_them(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu_hours", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # 0.0002 of the paper's budgets at 62 steps an epoch: DεpS 3 steps, OFA 8 (one per phase at least), BigNAS 5
    out = bench.main(["--budget-scale", "0.0002", "--device", "cpu", "--out", str(tmp_path), "--",
                      "--width-mult", "0.25", "--batch-size", "64", "--calib-images", "64", "--eval-every", "0"])
    summary = json.loads((out / "summary.json").read_text())
    assert [row["schedule"] for row in summary["table1"]] == ["deps", "ofa", "bignas"]
    epochs = [row["epochs"] for row in summary["table1"]]
    assert abs(epochs[0] / epochs[1] - 270 / 605) < 1e-9 and abs(epochs[2] / epochs[1] - 400 / 605) < 1e-9
    table = (out / "comparison.md").read_text()
    assert "| schedule | smallest top-1 | largest top-1 | mean top-1 | epochs | device-min/epoch | device-hours |" in table
    assert all(f"| {s} |" in table for s in ("deps", "ofa", "bignas"))
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for s in ("deps", "ofa", "bignas"):
        assert (out / s / "report.json").is_file()
