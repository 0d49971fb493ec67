"""Specialization pieces: encoding, exact cost tables, predictor, NSGA-II, latency table, evaluation cache."""
import itertools
import json
import warnings

import numpy as np
import pytest
import torch

from deps_fast.models import SubnetConfig, build_supernet
from deps_fast.search.costs import CostTable, count_macs, count_params, subnet_parts
from deps_fast.search.encoding import SubnetEncoding
from deps_fast.search.evaluate import EvaluationCache
from deps_fast.search.latency import LatencyTable, check_table, fit_scale
from deps_fast.search.nsga import Constraint, InfeasibleBudget, check_budgets, nsga2, pareto_front_2d
from deps_fast.search.predictor import fit_predictor, holdout_split, kendall_tau, rmse
from helpers import seed


def tiny(space="mbv3-cifar", kernel_sizes=(3, 5, 7), **kw):
    torch.manual_seed(seed())
    return build_supernet(space, 10, width_mult=0.25, kernel_sizes=kernel_sizes, dropout=0.0, **kw).eval()


def random_configs(net, encoding, n, generator):
    out = []
    for i in range(n):
        c = net.sample_config(generator)
        r = encoding.resolutions[i % len(encoding.resolutions)]
        out.append(encoding.canonical(SubnetConfig(c.ks, c.es, c.ds, r)))
    return out


# ---- encoding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space, kernel_sizes", [("mbv3-cifar", (3, 5, 7)), ("proxyless", (3, 5, 7)),
                                                 ("mbv3-cifar", (7,))])
def test_encoding_round_trip(space, kernel_sizes):
    net = tiny(space, kernel_sizes)
    enc = SubnetEncoding(net, (12, 16))
    configs = random_configs(net, enc, 30, torch.Generator().manual_seed(seed()))
    configs += [SubnetConfig(c.ks, c.es, c.ds, 16) for c in (net.max_config(), net.min_config())]
    features = enc.encode(configs)
    assert features.shape == (len(configs), 2 + net.num_blocks * (len(kernel_sizes) + 3))
    assert enc.decode(features) == configs
    assert enc.from_genomes(enc.to_genomes(configs)) == configs
    # every active block has exactly one kernel and one expand bit, skipped blocks none
    for c, f in zip(configs, features):
        assert f[:2].sum() == 1 and f[enc.resolutions.index(c.resolution)] == 1
        assert f[2:].sum() == 2 * len(net.active_blocks(c))


def test_encoding_follows_ofa_layout_and_ignores_skipped_blocks():
    net = tiny()
    enc = SubnetEncoding(net, (16,))
    ks, es = [3] * 20, [3] * 20
    ks[0], es[0], ks[5], es[5] = 7, 6, 5, 4          # block 0 (stage 0) and block 5 (stage 1, position 1)
    ks[3], es[3] = 7, 6                              # stage 0, position 3: skipped at depth 2
    config = SubnetConfig(tuple(ks), tuple(es), (2, 2, 2, 2, 2), 16)
    f = enc.encode([config])[0]
    # OFA: [resolution][k one-hot of each block][e one-hot of each block]
    assert f[0] == 1
    assert list(f[1:4]) == [0, 0, 1] and list(f[1 + 5 * 3:1 + 6 * 3]) == [0, 1, 0]
    e0 = 1 + 20 * 3
    assert list(f[e0:e0 + 3]) == [0, 0, 1] and list(f[e0 + 15:e0 + 18]) == [0, 1, 0]
    assert f[1 + 3 * 3:1 + 4 * 3].sum() == 0 and f[e0 + 9:e0 + 12].sum() == 0  # skipped block: zeros
    assert enc.canonical(config).ks[3] == 3 and enc.canonical(config) == enc.decode(f[None])[0]


def test_decode_refuses_what_is_not_an_encoding():
    enc = SubnetEncoding(tiny(), (16,))
    f = enc.encode([SubnetConfig((7,) * 20, (6,) * 20, (2,) * 5, 16)])
    broken = f.copy()
    broken[0, 1 + 3 * 3 + 1] = 1  # a kernel bit on block 3 (skipped: no expand bit)
    with pytest.raises(ValueError, match="not an encoding"):
        enc.decode(broken)
    with pytest.raises(ValueError, match="resolution"):
        enc.encode([SubnetConfig((7,) * 20, (6,) * 20, (2,) * 5, 32)])


# ---- costs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["mbv3-cifar", "proxyless"])
def test_cost_tables_equal_the_supernet_counts(space):
    net = tiny(space)
    res = (16, 24) if space == "mbv3-cifar" else (32,)
    enc = SubnetEncoding(net, res)
    parts = {r: subnet_parts(net, r) for r in res}
    flops = CostTable.build("mflops", net, enc, lambda p: count_macs(p.module, p.input_shape) / 1e6, parts.get)
    params = CostTable.build("params_m", net, enc, lambda p: count_params(p.module) / 1e6, parts.get)
    configs = random_configs(net, enc, 12, torch.Generator().manual_seed(seed()))
    configs.append(SubnetConfig(*(lambda c: (c.ks, c.es, c.ds))(net.max_config()), res[-1]))
    np.testing.assert_allclose(flops.of(configs), [net.flops(c) / 1e6 for c in configs], rtol=1e-12)
    np.testing.assert_allclose(params.of(configs), [net.params(c) / 1e6 for c in configs], rtol=1e-12)
    value, where = flops.minimum()
    assert value == pytest.approx(net.flops(net.min_config(), res[0]) / 1e6) and where.resolution == res[0]


def test_minimum_is_exact_for_any_additive_table():
    net = tiny()
    enc = SubnetEncoding(net, (8, 16))
    rng = np.random.default_rng(seed() % 2**32)
    # costs where the smallest choices are not the cheapest, and a stage's first blocks are expensive
    table = CostTable("latency_ms", enc, rng.uniform(1, 2, 2), rng.uniform(0.1, 1.0, (2, net.num_blocks, 3, 3)))
    value, config = table.minimum()
    assert table.of([config])[0] == pytest.approx(value)
    genomes = rng.integers(0, enc.genome_upper + 1, size=(20000, enc.genome_length))
    assert value <= table(genomes).min() + 1e-12
    # per resolution and stage, every depth with each block at its cheapest choice (stages add independently)
    best = min(table.fixed[r] + sum(min(sum(table.blocks[r, i].min() for i in idx[:d]) for d in net.depths)
                                    for idx in net.stage_blocks) for r in range(2))
    assert value == pytest.approx(best)


# ---- predictor ------------------------------------------------------------------------------------------------
def test_predictor_fits_a_known_function():
    net = tiny()
    enc = SubnetEncoding(net, (16,))
    gen = torch.Generator().manual_seed(seed())
    configs = random_configs(net, enc, 400, gen)
    x = enc.encode(configs)
    w = np.random.default_rng(0).normal(0, 0.01, x.shape[1])
    y = 0.7 + x @ w  # accuracies around 70% with a spread of a few points
    train, held = holdout_split(len(y), 0.25, 0)
    model = fit_predictor(x[train], y[train])
    assert model.base_acc.item() == pytest.approx(y[train].mean(), abs=1e-6) and not model.base_acc.requires_grad
    predicted = model.predict(x[held])
    spread = y[held].std()
    error = rmse(predicted, y[held])
    assert error < 0.3 * spread, f"RMSE {error:.4f} vs spread {spread:.4f}"
    assert kendall_tau(predicted, y[held]) > 0.7


def test_kendall_tau_and_rmse_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs: (1,2)+ (1,3)+ (1,4)+ (2,3)- (2,4)+ (3,4)+ -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert rmse([1.0, 3.0], [2.0, 2.0]) == 1.0
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fit_predictor(np.zeros((4, 3)), np.array([70.0, 71.0, 72.0, 73.0]))


# ---- search ---------------------------------------------------------------------------------------------------
def synthetic(genes=6, choices=4, seed_=0):
    rng = np.random.default_rng(seed_)
    acc_table, cost_table = rng.random((genes, choices)), rng.random((genes, choices))
    rows = np.arange(genes)

    def accuracy(g):
        return acc_table[rows, g].sum(1)

    def cost(g):
        return cost_table[rows, g].sum(1)

    everything = np.array(list(itertools.product(range(choices), repeat=genes)))
    return np.full(genes, choices - 1), accuracy, cost, everything


def test_nsga2_recovers_the_known_pareto_front():
    upper, accuracy, cost, everything = synthetic()
    truth = everything[pareto_front_2d(accuracy(everything), cost(everything))]
    front = nsga2(upper, accuracy, cost, population=60, generations=60, seed=1, progress=False)
    found = {tuple(g) for g in front.genomes}
    assert len(found & {tuple(g) for g in truth}) >= 0.9 * len(truth)
    assert np.all(np.diff(front.cost) > 0) and np.all(np.diff(front.accuracy) > 0)


def test_budgets_are_constraints_and_fixed_genes_stay_fixed():
    upper, accuracy, cost, everything = synthetic(seed_=3)
    upper[2] = 0  # a gene with one choice (like a space with one kernel size)
    everything = everything[everything[:, 2] == 0]
    budget = np.quantile(cost(everything), 0.2)
    feasible = everything[cost(everything) <= budget]
    best = accuracy(feasible).max()
    front = nsga2(upper, accuracy, cost, [Constraint("--max-cost", cost, budget)], population=60, generations=60,
                  seed=2, progress=False)
    assert len(front.genomes) and (cost(front.genomes) <= budget).all() and (front.genomes[:, 2] == 0).all()
    assert front.accuracy.max() == pytest.approx(best)
    # budgets each feasible alone but not together: an empty front (the command turns it into a clear error)
    apart = [Constraint("--max-cost", cost, budget), Constraint("--min-cost", lambda g: -cost(g), -3 * budget)]
    assert len(nsga2(upper, accuracy, cost, apart, population=20, generations=5, seed=0, progress=False).genomes) == 0


def test_infeasible_budget_names_the_smallest_value():
    net = tiny()
    enc = SubnetEncoding(net, (16,))
    parts = {16: subnet_parts(net, 16)}
    flops = CostTable.build("mflops", net, enc, lambda p: count_macs(p.module, p.input_shape) / 1e6, parts.get)
    smallest = flops.minimum()[0]
    check_budgets([Constraint("--max-mflops", flops, smallest * 1.0001, "MFLOPs")], lambda c: c.cost.minimum())
    with pytest.raises(InfeasibleBudget, match=f"--max-mflops {smallest / 2:g} is infeasible.*{smallest:.4g}"):
        check_budgets([Constraint("--max-mflops", flops, smallest / 2, "MFLOPs")], lambda c: c.cost.minimum())


# ---- latency table --------------------------------------------------------------------------------------------
def test_latency_table_is_built_saved_and_reused(tmp_path, monkeypatch):
    net = tiny(kernel_sizes=(7,))
    enc = SubnetEncoding(net, (12,))
    parts = subnet_parts(net, 12)
    all_parts = parts[0] + list(parts[1].values())
    keys = {p.key for p in all_parts}
    path = tmp_path / "latency.json"
    table = LatencyTable(path, "cpu", warmup=1, repeats=3)
    table.measure(all_parts, progress=False)
    assert table.measured_now == len(keys) < len(all_parts)  # repeated block shapes are timed once
    saved = json.loads(path.read_text())
    assert set(saved["entries"]) == keys and saved["device"] == table.device_name and saved["batch"] == 1
    assert all(v > 0 for v in saved["entries"].values())

    again = LatencyTable(path, "cpu", warmup=1, repeats=3)
    monkeypatch.setattr(LatencyTable, "time_module", lambda *a: pytest.fail("a stored part was measured again"))
    again.measure(all_parts, progress=False)
    assert again.measured_now == 0 and again.entries == table.entries
    monkeypatch.undo()
    other_batch = LatencyTable(path, "cpu", batch=2, warmup=1, repeats=3)
    assert other_batch.entries == {}  # another batch size (or device) is another table

    latency = CostTable.build("latency_ms", net, enc, again, {12: parts}.get)
    configs = [net.uniform_config(2, 3, 7, 12), net.uniform_config(4, 6, 7, 12)]
    predicted = latency.of(configs)
    assert predicted[0] < predicted[1]
    checked = check_table(again, net, configs, predicted, progress=False)
    assert len(checked["subnets"]) == 2 and checked["mean_abs_relative_error"] >= 0
    assert all(r["measured_ms"] > 0 for r in checked["subnets"])
    assert len(json.loads(path.read_text())["networks"]) == 2  # whole-network timings are kept too


def test_latency_table_can_time_onnx_runtime(tmp_path):
    net = tiny(kernel_sizes=(7,))
    fixed, blocks = subnet_parts(net, 12)
    table = LatencyTable(tmp_path / "ort.json", "cpu", runtime="onnxruntime", warmup=1, repeats=3)
    table.measure([fixed[0], blocks[(0, 7, 3)]], progress=False)  # each part exported to ONNX, run by a session
    assert table.measured_now == 2 and all(v > 0 for v in table.entries.values())
    assert json.loads((tmp_path / "ort.json").read_text())["runtime"] == "onnxruntime"
    assert LatencyTable(tmp_path / "ort.json", "cpu", warmup=1, repeats=3).entries == {}  # torch: another table


def test_fit_scale_by_hand():
    fit = fit_scale([1.0, 2.0, 4.0], [1.2, 2.4, 4.8])  # sums 1/1.2 of the truth: a pure scale
    assert fit["scale"] == pytest.approx(1.2) and fit["scaled_mean_abs_relative_error_loo"] == pytest.approx(0)
    assert fit["raw_mean_relative_error"] == pytest.approx(1 / 1.2 - 1)
    fit = fit_scale([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 2.0])  # one outlier does not move the median
    assert fit["scale"] == 1.0 and fit["scaled_mean_abs_relative_error_loo"] == pytest.approx(0.5 / 4)


# ---- evaluation cache -----------------------------------------------------------------------------------------
def test_evaluation_cache_resumes_after_a_crash(tmp_path):
    net = tiny()
    enc = SubnetEncoding(net, (16,))
    configs = random_configs(net, enc, 6, torch.Generator().manual_seed(seed()))
    calls = []

    def measure(config):
        calls.append(config)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user stops the run mid-way
        return 50.0 + len(calls)

    path = tmp_path / "evaluations.jsonl"
    with pytest.raises(KeyboardInterrupt):
        EvaluationCache(path, "fp1").evaluate(configs, "search", measure, progress=False)
    with open(path, "a") as f:
        f.write('{"fingerprint": "fp1", "config": {"ks"')  # a line cut short by a crash
    calls.clear()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        cache = EvaluationCache(path, "fp1")
    values = cache.evaluate(configs + configs[:2], "search", lambda c: calls.append(c) or 90.0, progress=False)
    assert calls == configs[3:]  # only what the crash left unmeasured
    assert values[:3] == [51.0, 52.0, 53.0] and values[3:6] == [90.0] * 3 and values[6:] == values[:2]
    assert cache.reused == 3
    with pytest.warns(RuntimeWarning, match="evaluations.jsonl:4"):  # the torn line stays apart, skipped ...
        reread = EvaluationCache(path, "fp1")
    assert [reread.get(c, "search") for c in configs] == values[:6]  # ... and the record after it is intact
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert EvaluationCache(path, "other inputs").get(configs[0], "search") is None
        assert EvaluationCache(path, "fp1").get(configs[0], "test") is None


def test_chosen_against_the_uniform_subnets_within_the_same_budget():
    from deps_fast.search.report import against_uniform

    def row(name, kind, top1, mflops, table_ms):
        return {"name": name, "kind": kind, "subnet": name, "test_top1": top1, "mflops": mflops,
                "table_latency_ms": table_ms, "measured_latency_ms": table_ms * 1.01}
    rows = [row("chosen: a", "chosen", 96.0, 11.0, 3.0), row("chosen: b", "chosen", 97.0, 14.0, 3.4),
            row("small", "uniform", 96.5, 7.0, 2.0), row("middle", "uniform", 96.8, 11.5, 3.3),
            row("big", "uniform", 97.5, 20.0, 4.0)]
    a, b = against_uniform(rows, [("a", {"mflops": 12}), ("b", {"mflops": 15, "latency_ms": 3.2})])
    assert a["uniform_within_budget"] == ["small", "middle"] and a["best_uniform"] == "middle"
    assert a["top1_gain_points"] == pytest.approx(-0.8)
    assert b["uniform_within_budget"] == ["small"] and b["top1_gain_points"] == pytest.approx(0.5)
