"""bench/run_gpu.sh, the time-boxed GPU pass, checked without a GPU: its dry run (the script parses, every
script, test file and flag it names exists) and its stage bookkeeping (a stage's record and log are written and
copied to $OUT as soon as it ends; a failed stage does not stop the pass; the summary table lists each stage)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "run_gpu.sh"


def _run(*args, **env):
    full_env = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_dry_run_lists_the_stages_in_priority_order_and_checks_them():
    r = _run("--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dry run OK" in r.stdout
    listed = [line.split()[1] for line in r.stdout.splitlines() if line[:4].strip().isdigit()]
    expected = ["env", "build", "tests", "bench-depthwise", "bench-distill", "bench-step", "savings", "summary"]
    if (REPO / "bench" / "bench_bn_act.py").is_file():
        expected.insert(5, "bench-bn-act")
    assert listed == expected
    assert "selects 0 tests" not in r.stdout


def test_unknown_argument_is_refused():
    r = _run("--fast")
    assert r.returncode == 2 and "unknown argument --fast" in r.stderr


def test_stage_records_reach_out_even_when_a_stage_fails(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    # nvidia-smi is absent or the GPU check fails here: the env stage fails, the summary still runs
    r = _run("--only", "env", GPU_PASS_RESULTS=str(results), OUT=str(out), PATH="/usr/bin:/bin")
    assert r.returncode == 0, r.stdout + r.stderr
    for folder in (results, out / "gpu-pass"):
        record = json.loads((folder / "env.json").read_text())
        assert record["stage"] == "env" and record["status"] in ("ok", "failed") and record["cap_s"] == 20
        assert (folder / "env.log").is_file()
        assert "| env |" in (folder / "summary.md").read_text()
    assert not (results / "build.json").exists(), "--only env ran other stages"
