"""deps_fast.trainer.report: validation, atomic files, Table 1 numbers, markdown, Pareto PNG, comparison of runs."""
import copy
import json

import pytest

from deps_fast.trainer.report import (TABLE1_HEADER, combine, format_significant, load_report, plot_pareto,
                                      render_markdown, run_labels, summary_row, validate_report, write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name -> (mflops, params_m); deliberately listed out of MFLOPs order, so sorting is exercised
SUBNETS = {"D2-E3-K7": (30.0, 0.9), "min": (12.3, 0.41), "max": (80.6, 2.5), "D3-E4-K5": (45.2, 1.4)}


def fake_report(schedule="deps", top1=None, name=None, device_hours=0.0833):
    top1 = top1 or {"min": 91.2, "D2-E3-K7": 93.5, "D3-E4-K5": 94.25, "max": 95.0}
    return {
        "version": 1,
        "run": {"name": name or f"{schedule}-mbv3-cifar-mnist5k", "schedule": schedule, "space": "mbv3-cifar",
                "data": "mnist5k", "device": "cpu (AMD EPYC, 2 threads)", "world_size": 1, "epochs": 4.0,
                "batch_size": 128, "resolution": 28, "deps_fast": "0.1.0", "torch": "2.13.0",
                "command": f"python -m deps_fast.train --schedule {schedule}",
                "started": "2026-11-24T04:00:00Z", "finished": "2026-11-24T04:05:00Z"},
        "subnets": [{"name": key, "config": {"d": [2]}, "mflops": SUBNETS[key][0], "params_m": SUBNETS[key][1],
                     "top1": value} for key, value in top1.items()],
        "phases": [{"name": "fm_warmup", "epochs": 2.0, "steps": 62, "wall_s": 80.1, "device_hours": 0.0222,
                    "images_per_s": 99.0},
                   {"name": "shrink", "epochs": 2.0, "steps": 62, "wall_s": 219.9, "device_hours": 0.0611,
                    "images_per_s": 36.1}],
        "total": {"epochs": 4.0, "steps": 124, "wall_s": 300.0, "device_hours": device_hours,
                  "device_min_per_epoch": 1.25, "images_per_s": 50.0},
    }


def three_reports():
    # ofa lacks D3-E4-K5, so the side-by-side table has a gap; min top1 ties are avoided so rows are unambiguous
    return [fake_report("deps"),
            fake_report("ofa", {"min": 88.0, "D2-E3-K7": 90.5, "max": 94.0}, device_hours=0.25),
            fake_report("bignas", {"min": 89.5, "D2-E3-K7": 92.0, "D3-E4-K5": 93.0, "max": 94.5},
                        device_hours=0.125)]


def table_rows(markdown, header):
    """Rows (lists of cells) of the markdown table whose header row is `header`."""
    lines = markdown.splitlines()
    start = lines.index("| " + " | ".join(header) + " |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def assert_png(path, min_bytes=1024):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > min_bytes
    import matplotlib.image
    height, width = matplotlib.image.imread(path).shape[:2]
    assert abs(width - 840) <= 10 and abs(height - 540) <= 10  # 7 x 4.5 inches at 120 dpi


# --------------------------------------------------------------------------------------------------- validate

def test_valid_report_is_returned_unchanged():
    report = fake_report()
    assert validate_report(report) is report
    minimal = fake_report()
    for optional in ("batch_size", "resolution", "deps_fast", "torch", "command", "started", "finished"):
        del minimal["run"][optional]
    del minimal["subnets"][0]["config"]
    minimal["phases"] = []
    validate_report(minimal)
    render_markdown(minimal)  # missing optional fields render as n/a


@pytest.mark.parametrize("mutate, key_path", [
    (lambda r: r["subnets"][2].pop("top1"), "report['subnets'][2]['top1']"),
    (lambda r: r["subnets"][1].update(top1="93"), "report['subnets'][1]['top1']"),
    (lambda r: r["subnets"][0].update(mflops=True), "report['subnets'][0]['mflops']"),
    (lambda r: r["subnets"][3].update(top1=float("nan")), "report['subnets'][3]['top1']"),
    (lambda r: r["run"].pop("schedule"), "report['run']['schedule']"),
    (lambda r: r["run"].update(world_size=1.5), "report['run']['world_size']"),
    (lambda r: r["run"].update(torch=2), "report['run']['torch']"),
    (lambda r: r["phases"][1].pop("steps"), "report['phases'][1]['steps']"),
    (lambda r: r["phases"].__setitem__(0, "fm_warmup"), "report['phases'][0]"),
    (lambda r: r["total"].pop("device_min_per_epoch"), "report['total']['device_min_per_epoch']"),
    (lambda r: r.pop("total"), "report['total']"),
    (lambda r: r.update(subnets={}), "report['subnets']"),
    (lambda r: r.update(subnets=[]), "report['subnets']"),
    (lambda r: r.update(version=2), "report['version']"),
    (lambda r: r["subnets"][3].update(name="min"), "report['subnets'][3]['name']"),
])
def test_validate_names_the_key_path(mutate, key_path):
    report = fake_report()
    mutate(report)
    with pytest.raises(ValueError) as error:
        validate_report(report)
    assert key_path in str(error.value)


def test_validate_rejects_non_dict():
    with pytest.raises(ValueError, match="report must be dict"):
        validate_report([1, 2])


# ----------------------------------------------------------------------------------------------------- numbers

def test_summary_row_by_hand():
    row = summary_row(fake_report())
    assert row["schedule"] == "deps"
    assert row["smallest_top1"] == 93.5  # D2-E3-K7, the paper's comparison point
    assert row["largest_top1"] == 95.0  # "max", 80.6 MFLOPs
    assert row["mean_top1"] == 93.5 and row["mean_count"] == 1  # the only uniform K7 subnet here
    assert (row["min_name"], row["min_top1"]) == ("min", 91.2)  # fewest MFLOPs, reported apart
    assert (row["epochs"], row["device_min_per_epoch"], row["device_hours"]) == (4.0, 1.25, 0.0833)


def ofa_like_report(with_configs):
    """OFA's final subnets: its min is K3, the six uniform K7 subnets and the max (D4-E6-K7)."""
    names = [("D2-E3-K3 (min)", 2, 3, 3, 40.0, 70.0), ("D2-E3-K7", 2, 3, 7, 45.1, 80.0),
             ("D3-E3-K7", 3, 3, 7, 68.3, 82.0), ("D4-E3-K7", 4, 3, 7, 91.5, 83.0), ("D4-E4-K7", 4, 4, 7, 120.8, 84.0),
             ("D3-E6-K7", 3, 6, 7, 132.9, 85.0), ("D4-E6-K7 (max)", 4, 6, 7, 179.7, 86.0)]
    report = fake_report("ofa")
    report["subnets"] = [{"name": name if not with_configs else f"subnet {i}", "mflops": mf, "params_m": 1.0,
                          "top1": top1, **({"config": {"ks": [k] * 20, "es": [e] * 20, "ds": [d] * 5}}
                                           if with_configs else {})}
                         for i, (name, d, e, k, mf, top1) in enumerate(names)]
    return report


@pytest.mark.parametrize("with_configs", [False, True])
def test_table1_compares_the_papers_subnets_not_the_min(with_configs):
    row = summary_row(ofa_like_report(with_configs))
    assert row["smallest_top1"] == 80.0  # D2-E3-K7, not OFA's K3 min
    assert row["largest_top1"] == 86.0
    assert row["mean_top1"] == pytest.approx((80 + 82 + 83 + 84 + 85 + 86) / 6) and row["mean_count"] == 6
    assert row["min_top1"] == 70.0 and row["comparison"].startswith("D2-E3-K7")


def test_summary_row_single_subnet():
    report = fake_report(top1={"max": 77.0})
    row = summary_row(report)
    assert row["smallest_top1"] == row["largest_top1"] == row["mean_top1"] == row["min_top1"] == 77.0
    assert row["comparison"].startswith("fallback")


def test_format_significant():
    assert [format_significant(v) for v in (0.0833, 0.0222, 1.25, 12.5, 1234.4, 0.000123, 0)] == \
        ["0.0833", "0.0222", "1.25", "12.5", "1234", "0.000123", "0"]


def test_labels_disambiguate_shared_schedules():
    reports = [fake_report("deps", name="a"), fake_report("deps", name="b"), fake_report("ofa")]
    assert run_labels(reports) == ["deps (a)", "deps (b)", "ofa"]
    same = [fake_report("deps"), fake_report("deps")]
    assert len(set(run_labels(same))) == 2


# ---------------------------------------------------------------------------------------------------- markdown

def test_markdown_layout():
    deps, ofa, bignas = three_reports()
    markdown = render_markdown(deps, [ofa, bignas])
    assert markdown.startswith("# deps-mbv3-cifar-mnist5k\n")
    assert "cpu (AMD EPYC, 2 threads)" in markdown and "world size 1" in markdown
    assert "torch 2.13.0" in markdown and "deps_fast 0.1.0" in markdown
    assert "`python -m deps_fast.train --schedule deps`" in markdown
    assert table_rows(markdown, TABLE1_HEADER) == [  # D2-E3-K7 is the only uniform K7 subnet of these fakes
        ["deps", "93.50", "95.00", "93.50", "91.20 (min)", "4", "1.25", "0.0833", "fixed"],
        ["ofa", "90.50", "94.00", "90.50", "88.00 (min)", "4", "1.25", "0.250", "fixed"],
        ["bignas", "92.00", "94.50", "92.00", "89.50 (min)", "4", "1.25", "0.125", "fixed"],
    ]
    subnets = table_rows(markdown, ("subnet", "MFLOPs", "params (M)", "top-1 %"))
    assert subnets == [["min", "12.3", "0.41", "91.20"], ["D2-E3-K7", "30.0", "0.90", "93.50"],
                       ["D3-E4-K5", "45.2", "1.40", "94.25"], ["max", "80.6", "2.50", "95.00"]]
    phases = table_rows(markdown, ("phase", "epochs", "steps", "wall time", "device-hours", "images/s"))
    assert phases == [["fm_warmup", "2", "62", "1m 20s", "0.0222", "99.0"],
                      ["shrink", "2", "62", "3m 40s", "0.0611", "36.1"],
                      ["**total**", "4", "124", "5m 00s", "0.0833", "50.0"]]


def test_markdown_escapes_pipes_and_backticks():
    report = fake_report(name="a|b")
    report["run"]["command"] = "echo `date`"
    markdown = render_markdown(report)
    assert "Command: `` echo `date` ``" in markdown  # fence longer than the backticks inside, padded
    assert len(table_rows(markdown, TABLE1_HEADER)) == 1


# ------------------------------------------------------------------------------------------------------- files

def test_write_report_creates_three_files(tmp_path):
    deps, ofa, bignas = three_reports()
    compare_file = tmp_path / "ofa" / "report.json"
    write_report(compare_file.parent, ofa)
    expected = copy.deepcopy(deps)

    paths = write_report(tmp_path / "run", deps, compare=[compare_file, bignas])

    assert set(paths) == {"json", "markdown", "pareto"}
    assert [p.name for p in paths.values()] == ["report.json", "report.md", "pareto.png"]
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == expected
    assert load_report(paths["json"]) == expected
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert [row[0] for row in table_rows(markdown, TABLE1_HEADER)] == ["deps", "ofa", "bignas"]
    assert_png(paths["pareto"])
    assert not list((tmp_path / "run").glob(".*.tmp"))  # no temporary files left behind


def test_write_report_accepts_single_compare_path(tmp_path):
    ofa_paths = write_report(tmp_path / "ofa", three_reports()[1])
    paths = write_report(tmp_path / "run", fake_report(), compare=str(ofa_paths["json"]))
    rows = table_rows(paths["markdown"].read_text(encoding="utf-8"), TABLE1_HEADER)
    assert [row[0] for row in rows] == ["deps", "ofa"]


def test_write_report_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"report\['total'\]"):
        write_report(tmp_path, {**fake_report(), "total": None})
    with pytest.raises(ValueError, match=r"compare\[0\]"):
        write_report(tmp_path, fake_report(), compare=[42])
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path, fake_report(), compare=[tmp_path / "nope.json"])
    assert not (tmp_path / "report.json").exists()  # nothing written before the inputs were checked


def test_load_report_errors(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match="missing.json.*does not exist"):
        load_report(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        load_report(bad)
    invalid = tmp_path / "invalid.json"
    report = fake_report()
    del report["subnets"][1]["mflops"]
    invalid.write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(ValueError, match=r"invalid.json.*report\['subnets'\]\[1\]\['mflops'\]"):
        load_report(invalid)


# -------------------------------------------------------------------------------------------------------- plot

def test_plot_single_report_single_subnet(tmp_path):
    path = plot_pareto([fake_report(top1={"max": 77.0})], tmp_path / "deep" / "p.png", title="one point")
    assert_png(path)


def test_plot_many_reports_with_shared_schedule(tmp_path):
    reports = [*three_reports(), fake_report("deps", name="deps-rerun")]
    assert_png(plot_pareto(reports, tmp_path / "p.png"))


def test_plot_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="reports is empty"):
        plot_pareto([], tmp_path / "p.png")


# ----------------------------------------------------------------------------------------------------- combine

def test_combine(tmp_path):
    deps, ofa, bignas = three_reports()
    ofa_file = write_report(tmp_path / "ofa", ofa)["json"]

    paths = combine([deps, ofa_file, bignas], tmp_path / "bench")

    assert [p.name for p in paths.values()] == ["comparison.md", "pareto.png"]
    assert_png(paths["pareto"])
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert [row[:5] for row in table_rows(markdown, TABLE1_HEADER)] == [
        ["deps", "93.50", "95.00", "93.50", "91.20 (min)"], ["ofa", "90.50", "94.00", "90.50", "88.00 (min)"],
        ["bignas", "92.00", "94.50", "92.00", "89.50 (min)"]]
    assert table_rows(markdown, ("subnet", "MFLOPs", "deps", "ofa", "bignas")) == [
        ["min", "12.3", "91.20", "88.00", "89.50"],
        ["D2-E3-K7", "30.0", "93.50", "90.50", "92.00"],
        ["D3-E4-K5", "45.2", "94.25", "–", "93.00"],
        ["max", "80.6", "95.00", "94.00", "94.50"]]
    for report in (deps, ofa, bignas):
        assert report["run"]["command"] in markdown


def test_combine_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="paths_or_reports is empty"):
        combine([], tmp_path)
