"""The GPU pass's closing table (bench/run_gpu.sh): one line per stage with its status, time and headline
numbers, read from the stage records (<stage>.json) and the benchmark results each stage wrote (<stage>/*.json).

    python bench/gpu_summary.py bench/results/gpu-pass     # prints the table, writes summary.md / summary-table.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path


def _geomean(values):
    values = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def headline(stage: str, folder: Path) -> str:
    """A few numbers that say how the stage went (empty when it wrote none)."""
    if stage == "tests":
        xml = folder / "tests.xml"
        if not xml.is_file():
            return ""
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        get = lambda k: int(suite.get(k, 0))  # noqa: E731
        return (f"{get('tests')} tests: {get('tests') - get('failures') - get('errors') - get('skipped')} passed, "
                f"{get('failures')} failed, {get('errors')} errors, {get('skipped')} skipped")
    parts = []
    for path in sorted((folder / stage).glob("*.json")) if (folder / stage).is_dir() else []:
        try:
            rows = json.loads(path.read_text()).get("rows") or []
        except (ValueError, AttributeError):
            continue
        for key in sorted({k for r in rows for k in r if k.startswith("speedup")}):
            by_impl = {}
            for r in rows:
                name = r.get("backend") or r.get("impl") or r.get("contender") or "?"
                by_impl.setdefault(name, []).append(r.get(key))
            text = ", ".join(f"{n} {g:.2f}x" for n, v in by_impl.items() if (g := _geomean(v)) and n != "eager")
            if text:
                parts.append(f"{key} (geomean): {text}")
        shares = [r["copy_frac"] for r in rows if isinstance(r.get("copy_frac"), (int, float))]
        if shares:
            parts.append(f"copy-BW share median {statistics.median(shares):.0%}, max {max(shares):.0%}")
    study = folder / stage / "study.json"
    if study.is_file():
        runs = json.loads(study.read_text()).get("runs", [])
        parts.append(f"{len(runs)} runs finished")
    return "; ".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="the pass's results folder (bench/results/gpu-pass)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    records = []
    for path in sorted(folder.glob("*.json"), key=lambda f: f.stat().st_mtime):
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(rec, dict) and "stage" in rec and rec["stage"] != "summary":
            rec["headline"] = headline(rec["stage"], folder)
            records.append(rec)
    lines = ["| stage | status | seconds (cap) | headline |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']} ({r['cap_s']}) | {r['headline']} |" for r in records]
    table = "\n".join(lines)
    (folder / "summary.md").write_text(table + "\n")
    (folder / "summary-table.json").write_text(json.dumps(records, indent=1))
    print(table)


if __name__ == "__main__":
    main()
