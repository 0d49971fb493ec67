"""search.json, search.md and pareto.png of a search (pure Python and matplotlib; reads the result dict)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from deps_fast._util import atomic_write

FIGURE_SIZE, PNG_DPI = (11, 4.5), 120


def against_uniform(rows: list, targets: list) -> list[dict]:
    """Per target (name, {metric: budget}): its chosen subnet (row "chosen: <name>") against the uniform subnets
    within the same budgets (latency: the table's prediction, as the search saw it), the best by test top-1."""
    by_name = {r["name"]: r for r in rows}
    uniform = [r for r in rows if r["kind"] == "uniform"]
    out = []
    for name, budgets in targets:
        mine = by_name[f"chosen: {name}"]
        fits = [u for u in uniform
                if all(u["table_latency_ms" if m == "latency_ms" else m] <= b for m, b in budgets.items())]
        best = max(fits, key=lambda u: u["test_top1"]) if fits else None

        def of_best(key):
            return None if best is None else best[key]
        out.append({"target": name, "chosen": mine["subnet"], "chosen_test_top1": mine["test_top1"],
                    "chosen_measured_latency_ms": mine["measured_latency_ms"], "chosen_mflops": mine["mflops"],
                    "uniform_within_budget": [u["name"] for u in fits], "best_uniform": of_best("name"),
                    "best_uniform_test_top1": of_best("test_top1"),
                    "best_uniform_measured_latency_ms": of_best("measured_latency_ms"),
                    "best_uniform_mflops": of_best("mflops"),
                    "top1_gain_points": None if best is None else mine["test_top1"] - best["test_top1"]})
    return out


def write(out_dir, result: dict) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": atomic_write(out / "search.json", json.dumps(result, indent=1).encode()),
             "markdown": atomic_write(out / "search.md", render_markdown(result).encode()),
             "pareto": plot(result, out / "pareto.png")}
    return paths


def _f(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(r: dict) -> str:
    s, p, lat = r["settings"], r["predictor"], r["latency_table"]
    lines = [f"# Specialization of {r['run_dir']}", "",
             f"`{r['command']}` on {r['device']} (deps_fast {r['deps_fast']}, torch {r['torch']}).", "",
             f"Weights: `{r['source']['checkpoint']}` (step {r['source']['step']}). Space {r['space']['name']}: "
             f"k {r['space']['kernel_sizes']}, e {r['space']['expand_ratios']}, d {r['space']['depths']}, "
             f"resolutions {s['resolutions']}; {r['space']['features']}-feature encoding.", "",
             "## Subnets, measured", "",
             "Top-1 on the search split (training images held out from calibration) chose; the test set was used "
             "once, here, after the choice. Latency: table sum and whole network measured, batch "
             f"{lat['batch']}, {lat['runtime']}.", ""]
    rows = [[x["name"], f"`{x['subnet']}`", _f(x["predicted_top1"]), _f(x["search_top1"]), _f(x["test_top1"]),
             _f(x["mflops"]), _f(x["params_m"], 3), _f(x["table_latency_ms"], 3), _f(x["measured_latency_ms"], 3)]
            for x in r["subnets"]]
    lines += _table(["subnet", "config", "predicted", "search top-1", "test top-1", "MFLOPs", "M params",
                     "table ms", "measured ms"], rows)
    lines += ["", "## Against the uniform k7 subnets within the same budget", ""]
    rows = [[c["target"], _f(c["chosen_test_top1"]), _f(c["chosen_measured_latency_ms"], 3),
             c["best_uniform"] or "none fits",
             _f(c["best_uniform_test_top1"]), _f(c["best_uniform_measured_latency_ms"], 3),
             _f(c["top1_gain_points"])] for c in r["comparisons"]]
    lines += _table(["target", "chosen test top-1", "chosen ms", "best uniform within budget", "its test top-1",
                     "its ms", "gain (points)"], rows)
    lines += ["", "## Predictor and latency table", "",
              f"- {r['evaluated']['subnets']} subnets evaluated on {s['search_images']} search images "
              f"({r['evaluated']['reused_from_cache']} from the cache); top-1 from "
              f"{_f(r['evaluated']['search_top1_min'])} to {_f(r['evaluated']['search_top1_max'])}%.",
              f"- Predictor on {int(p['heldout_subnets'])} held-out subnets: RMSE {_f(p['rmse_top1_points'], 3)} "
              f"top-1 points (predicting the mean: {_f(p['baseline_rmse_top1_points'], 3)}), Kendall τ "
              f"{_f(p['kendall_tau'], 3)}.",
              _latency_line(lat),
              "- Smallest values in the space: "
              + ", ".join(f"{k} {_f(v, 3)}" for k, v in r["space"]["minimum"].items()),
              "", "## Times (s)", ""]
    lines += _table(list(r["times_s"]), [[_f(v, 1) for v in r["times_s"].values()]])
    if r["exports"]:
        lines += ["", "## Exports", ""]
        for e in r["exports"]:
            diffs = f"torch.export max |diff| {e['torch_export_max_abs_diff']:.2g}"
            if "onnx_max_abs_diff" in e:
                diffs += f", ONNX Runtime max |diff| {e['onnx_max_abs_diff']:.2g}"
            lines.append(f"- `{e['name']}`: " + ", ".join(f"`{Path(f).name}`" for f in e["files"].values())
                         + f" ({diffs})")
    return "\n".join(lines) + "\n"


def _latency_line(lat: dict) -> str:
    fit, final = lat["fit"], lat["chosen_and_uniform"]
    line = (f"- Latency table `{Path(lat['path']).name}`: {lat['parts']} parts ({lat['measured_now']} timings "
            f"made in this run).")
    if fit["checked_subnets"]:
        loo = fit["scaled_mean_abs_relative_error_loo"]
        line += (f" On {fit['checked_subnets']} random whole networks the raw sums are off by "
                 f"{_f(100 * fit['raw_mean_relative_error'], 1)}% on average (mean |error| "
                 f"{_f(100 * fit['raw_mean_abs_relative_error'], 1)}%); scaled by {fit['scale']:.3f} (median "
                 f"measured / table), mean |error| {'–' if loo is None else _f(100 * loo, 1)}% (leave-one-out).")
    if final["mean_abs_relative_error"] is not None:
        line += (f" On the chosen and uniform subnets (not used for the scale): mean |error| "
                 f"{_f(100 * final['mean_abs_relative_error'], 1)}%, mean error "
                 f"{_f(100 * final['mean_relative_error'], 1)}%.")
    return line


def plot(r: dict, path: Path) -> Path:
    """Predicted front against MFLOPs and against latency, with the chosen and uniform subnets as measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    panels = (("mflops", "mflops", "MFLOPs"), ("latency_ms", "measured_latency_ms", "latency (ms)"))
    for index, (metric, measured_key, label) in enumerate(panels):
        axes = figure.add_subplot(1, 2, index + 1)
        front = r["fronts"].get(metric, [])
        axes.plot([x[metric] for x in front], [x["predicted_top1"] for x in front], "-", color="C0", alpha=0.7,
                  label="predicted front (search split)")
        for kind, marker, color in (("chosen", "*", "C3"), ("uniform", "o", "C2")):
            rows = [x for x in r["subnets"] if x["kind"] == kind]
            xs = [x[measured_key] for x in rows]
            axes.scatter(xs, [x["search_top1"] for x in rows], marker=marker, facecolors="none", edgecolors=color,
                         s=70, label=f"{kind}: search split")
            axes.scatter(xs, [x["test_top1"] for x in rows], marker=marker, color=color, s=70,
                         label=f"{kind}: test set")
        axes.set_xlabel(label + (": front from the scaled table, subnets measured" if metric == "latency_ms" else ""))
        axes.set_ylabel("top-1 accuracy (%)")
        axes.grid(True, alpha=0.3)
        if index == 0:
            axes.legend(fontsize=8)
    figure.suptitle(f"specialization of {Path(r['run_dir']).name} on {r['device']}", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buffer.getvalue())
