"""Supernets: layouts and FLOPs, configs, sampling, extraction, channel sort, BN recalibration, backends."""
import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deps_fast
from deps_fast.models import SubnetConfig, build_supernet, make_divisible, recalibrate_bn
from deps_fast.models.layers import ElasticDepthwise
from helpers import require_backend, seed

SPACES = [("mbv3-cifar", 24, 10), ("mbv3", 48, 20), ("proxyless", 48, 20)]


def randomized(name, num_classes, **kw):
    """A supernet whose BN statistics, BN affine terms and transform matrices are not at their init values,
    so extraction and import tests exercise every tensor."""
    torch.manual_seed(seed())
    net = build_supernet(name, num_classes, dropout=0.0, **kw)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        for n, p in net.named_parameters():
            if "transforms" in n:
                p.add_(0.05 * torch.randn_like(p))
    return net


# ---- layouts and costs ---------------------------------------------------------------------------------------
def test_make_divisible_matches_ofa_rule():
    assert [make_divisible(v, 8) for v in (16, 20, 28, 96, 100, 4, 60.0)] == [16, 24, 32, 96, 104, 8, 64]
    assert make_divisible(11, 8) == 16  # 8 would be below 90% of 11


def test_flops_checksums_mbv3_imagenet():
    net = build_supernet("mbv3", 1000)
    assert net.flops(net.max_config(), 224) / 1e6 == pytest.approx(566.17, abs=0.005)
    assert net.flops(net.min_config(), 224) / 1e6 == pytest.approx(121.28, abs=0.005)
    assert net.flops(net.uniform_config(2, 3, 7), 224) / 1e6 == pytest.approx(151.29, abs=0.005)


def test_flops_checksums_mbv3_cifar_six_uniform_subnets():
    net = build_supernet("mbv3-cifar", 10)
    got = [round(net.flops(net.uniform_config(d, e, 7), 32) / 1e6, 1)
           for d, e in [(2, 3), (3, 3), (4, 3), (4, 4), (3, 6), (4, 6)]]
    assert got == [45.1, 68.3, 91.5, 120.8, 132.9, 179.7]


def test_layouts():
    net = build_supernet("mbv3", 1000)
    assert net.num_blocks == 20 and [len(s) for s in net.stage_blocks] == [4] * 5
    assert [net.blocks[s[0]].out_ch for s in net.stage_blocks] == [24, 40, 80, 112, 160]
    assert [net.blocks[s[0]].stride for s in net.stage_blocks] == [2, 2, 2, 1, 2]
    assert [net.blocks[s[0]].se is not None for s in net.stage_blocks] == [False, True, False, True, True]
    assert net.blocks[0].depthwise.weight.shape == (96, 1, 7, 7)  # make_divisible(16 * 6)
    assert net.blocks[0].depthwise.transforms["5"].shape == (25, 25)
    assert torch.equal(net.blocks[0].depthwise.transforms["3"], torch.eye(9))
    assert net.blocks[5].se.reduce.weight.shape == (make_divisible(240 // 4, 8), 240, 1, 1)
    assert net.classifier.weight.shape == (1000, 1280) and net.final_expand.conv.out_channels == 960
    cifar = build_supernet("mbv3-cifar", 10)
    assert cifar.stem.conv.stride == (1, 1) and [cifar.blocks[s[0]].stride for s in cifar.stage_blocks] == [1, 2, 2, 1, 2]
    prox = build_supernet("proxyless", 1000)
    assert [len(s) for s in prox.stage_blocks] == [4, 4, 4, 4, 4, 1] and prox.num_elastic_stages == 5
    assert prox.stem.conv.out_channels == 32 and prox.first_block.out_ch == 16 and not prox.first_block.residual
    assert prox.feature_mix.bn is not None and prox.final_expand is None
    assert all(b.se is None and b.act == "relu6" for b in prox.blocks)
    assert len(prox.max_config().ks) == 21 and len(prox.max_config().ds) == 5


def test_every_depthwise_goes_through_the_fused_op():
    net = build_supernet("mbv3-cifar", 10)
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in net.modules())
    assert sum(isinstance(m, ElasticDepthwise) for m in net.modules()) == 21


def test_he_fout_init_and_zero_init_residual():
    torch.manual_seed(0)
    net = build_supernet("mbv3", 1000)
    w = net.blocks[3].expand.weight
    assert w.std().item() == pytest.approx((2.0 / w.shape[0]) ** 0.5, rel=0.05)
    dw = net.blocks[3].depthwise.weight
    assert dw.std().item() == pytest.approx((2.0 / (dw.shape[0] * 49)) ** 0.5, rel=0.05)
    assert torch.all(net.blocks[1].project_bn.weight == 1)
    z = build_supernet("mbv3", 1000, zero_init_residual=True)
    assert torch.all(z.blocks[1].project_bn.weight == 0) and torch.all(z.blocks[0].project_bn.weight == 1)


def test_params_count_conv_bn_se_linear():
    net = build_supernet("mbv3-cifar", 10)
    cfg = net.max_config()
    static = net.extract(cfg)
    assert net.params(cfg) == sum(p.numel() for p in static.parameters())
    # the max subnet holds every supernet tensor except the kernel-transform matrices
    transforms = sum(p.numel() for n, p in net.named_parameters() if "transforms" in n)
    assert net.params(cfg) == sum(p.numel() for p in net.parameters()) - transforms
    assert net.params(net.min_config()) < net.params(cfg)


# ---- configs ---------------------------------------------------------------------------------------------------
def test_config_value_semantics_and_json_round_trip():
    net = build_supernet("mbv3", 1000)
    cfg = net.uniform_config(2, 3, 7)
    assert str(cfg) == "D2-E3-K7" and str(net.max_config()) == "D4-E6-K7"
    assert hash(cfg) == hash(net.uniform_config(2, 3, 7)) and cfg == net.uniform_config(2, 3, 7)
    with pytest.raises(Exception):
        cfg.ks = (3,)
    mixed = net.sample_config(torch.Generator().manual_seed(3))
    assert SubnetConfig.from_json(mixed.to_json()) == mixed
    assert SubnetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    r = SubnetConfig(cfg.ks, cfg.es, cfg.ds, resolution=160)
    assert str(r) == "D2-E3-K7-R160" and net.flops(r) == net.flops(cfg, 160)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ks=(3, 4), es=(3, 3), ds=(2,)), "ks"),
    (dict(ks=(3, 5), es=(3,), ds=(2,)), "one entry per elastic block"),
    (dict(ks=(3,), es=(0,), ds=(2,)), "es"),
    (dict(ks=(3,), es=(3,), ds=()), "ds"),
    (dict(ks=(3,), es=(3,), ds=(2,), resolution=-1), "resolution"),
    (dict(ks="35", es=(3,), ds=(2,)), "ks"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubnetConfig(**kwargs)


def test_supernet_rejects_configs_that_do_not_fit():
    net = build_supernet("mbv3-cifar", 10)
    with pytest.raises(ValueError, match="lengths"):
        net.validate(SubnetConfig((3,) * 19, (3,) * 19, (2,) * 5))
    with pytest.raises(ValueError, match=r"config.es holds \[5\]"):
        net.validate(SubnetConfig((3,) * 20, (5,) * 20, (2,) * 5))
    with pytest.raises(ValueError, match="from_dict"):
        SubnetConfig.from_dict({"ks": [3]})


@pytest.mark.parametrize("bad, match", [
    (dict(name="resnet"), "name must be one of"), (dict(num_classes=0), "num_classes"),
    (dict(width_mult=0), "width_mult"), (dict(kernel_sizes=(4,)), "kernel_sizes"),
    (dict(depths=()), "depths"), (dict(dropout=1.0), "dropout"),
])
def test_build_supernet_bad_arguments(bad, match):
    kw = dict(name="mbv3", num_classes=10) | bad
    with pytest.raises(ValueError, match=match):
        build_supernet(**kw)


def test_sampling_is_reproducible_uniform_and_restrictable():
    net = build_supernet("mbv3", 1000)
    a = [net.sample_config(torch.Generator().manual_seed(s)) for s in range(50)]
    b = [net.sample_config(torch.Generator().manual_seed(s)) for s in range(50)]
    assert a == b and len(set(a)) == 50
    ks = [k for c in a for k in c.ks]
    assert {ks.count(k) for k in (3, 5, 7)} and min(ks.count(k) for k in (3, 5, 7)) > 250  # 1000 draws
    r = net.sample_config(torch.Generator().manual_seed(0), kernel_sizes=(7,), depths=(3, 4))
    assert set(r.ks) == {7} and set(r.ds) <= {3, 4}
    with pytest.raises(ValueError, match="not a subset"):
        net.sample_config(kernel_sizes=(9,))


# ---- extraction ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, res, classes", SPACES)
@pytest.mark.parametrize("train", [False, True])
def test_extract_equals_supernet(name, res, classes, train):
    net = randomized(name, classes)
    gen = torch.Generator().manual_seed(seed())
    configs = [net.max_config(), net.min_config()] + [net.sample_config(gen) for _ in range(2)]
    x = torch.randn(3, 3, res, res)
    for cfg in configs:
        net.train(train)
        static = net.extract(cfg)
        assert static.training == train
        assert not any(isinstance(m, ElasticDepthwise) for m in static.modules())
        torch.testing.assert_close(static(x), net(x, cfg), rtol=1e-4, atol=1e-4, msg=f"{name} {cfg}")
        if train:  # the batch statistics moved the same running averages
            assert torch.allclose(static.blocks[1].project[1].running_mean,
                                  net.blocks[net.active_blocks(cfg)[0]].project_bn.running_mean, atol=1e-5)


def test_extracted_subnet_saves_reloads_and_exports(tmp_path):
    net = randomized("mbv3-cifar", 10)
    cfg = net.sample_config(torch.Generator().manual_seed(1))
    static = net.extract(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.save(static.state_dict(), tmp_path / "sub.pt")
    again = net.extract(cfg).eval()
    for p in again.parameters():
        p.data.zero_()
    again.load_state_dict(torch.load(tmp_path / "sub.pt"))
    torch.testing.assert_close(again(x), static(x))
    program = torch.export.export(static, (x,), strict=False)
    torch.export.save(program, tmp_path / "sub.pt2")
    torch.testing.assert_close(torch.export.load(tmp_path / "sub.pt2").module()(x), static(x))
    assert SubnetConfig.from_json(static.config_json) == cfg
    # ONNX (through torch.export) and ONNX Runtime: tests/test_search_cli.py::test_exports_equal_the_supernet


# ---- channel reorganization --------------------------------------------------------------------------------------
def _sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _train_steps(net, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


# proxyless downsamples 32x: at 24 px its last BNs would see 4 values a channel and the net is so
# ill-conditioned that 1e-10 parameter noise moves eval outputs by 1e-2; at 64 px it is well behaved
@pytest.mark.parametrize("name, res", [("mbv3-cifar", 24), ("proxyless", 64)])
def test_reorganize_keeps_function_and_permutes_optimizer_state(name, res):
    # float64: a permuted sum order alone moves a float32 net's logits by up to ~1e-2 after a few noisy steps
    net = randomized(name, 10).double()
    gen = torch.Generator().manual_seed(seed())
    batches = [(torch.randn(4, 3, res, res, generator=gen, dtype=torch.float64), torch.randint(10, (4,), generator=gen))
               for _ in range(3)]
    opt = _sgd(net)
    _train_steps(net, opt, batches[:2])  # momentum buffers are non-trivial now
    twin = copy.deepcopy(net)
    twin_opt = _sgd(twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    stale = copy.deepcopy(net)
    stale_opt = _sgd(stale)
    stale_opt.load_state_dict(copy.deepcopy(opt.state_dict()))

    before = net.blocks[0].project.weight.detach().abs().sum((0, 2, 3))
    net.reorganize_channels(opt)
    stale.reorganize_channels()  # weights sorted, momentum left as it was (the authors' bug)
    after = net.blocks[0].project.weight.detach().abs().sum((0, 2, 3))
    assert torch.all(after[:-1] >= after[1:]) and not torch.equal(before, after)

    x = batches[2][0]
    for m in (net, twin, stale):
        m.eval()
    torch.testing.assert_close(net(x), twin(x), rtol=1e-7, atol=1e-7)
    for m in (net, twin, stale):
        m.train()
    _train_steps(net, opt, batches[2:])
    _train_steps(twin, twin_opt, batches[2:])
    _train_steps(stale, stale_opt, batches[2:])
    for m in (net, twin, stale):
        m.eval()
    torch.testing.assert_close(net(x), twin(x), rtol=1e-7, atol=1e-7)
    # the test can fail: with the momentum left unpermuted (the authors' bug) the step is a different one
    stale_gap = max((a - b).abs().max().item() for a, b in zip(stale.parameters(), net.parameters()))
    assert stale_gap > 1e-4, f"stale momentum should change the step (max parameter gap {stale_gap:.2g})"


def test_reorganize_makes_prefix_subnets_keep_important_channels():
    net = randomized("mbv3-cifar", 10)
    net.reorganize_channels()
    for block in net.blocks:
        imp = block.project.weight.detach().abs().sum((0, 2, 3))
        assert torch.all(imp[:-1] >= imp[1:])
        if block.se is not None:
            se_imp = block.se.expand.weight.detach().abs().sum((0, 2, 3))
            assert torch.all(se_imp[:-1] >= se_imp[1:])


# ---- BN recalibration --------------------------------------------------------------------------------------------
def test_recalibrate_bn_by_hand_on_a_small_network():
    torch.manual_seed(seed())
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 1),
                        nn.BatchNorm2d(4), nn.Flatten(), nn.Dropout(0.5))
    for bn in (net[1], net[4]):
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.normal_()
    batches = [torch.randn(6, 3, 5, 5) for _ in range(3)]
    means1, vars1, means2, vars2 = [], [], [], []
    for x in batches:  # by hand: each batch normalised by its own statistics on the way through
        h = net[0](x)
        m, v = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
        means1.append(m), vars1.append(v)
        h = F.relu((h - m[:, None, None]) / torch.sqrt(v[:, None, None] + 1e-5) * net[1].weight[:, None, None]
                   + net[1].bias[:, None, None])
        h = net[3](h)
        means2.append(h.mean((0, 2, 3))), vars2.append(h.var((0, 2, 3), unbiased=False))
    net.eval()
    with torch.no_grad():
        recalibrate_bn(net, None, batches)
    assert not net.training
    torch.testing.assert_close(net[1].running_mean, torch.stack(means1).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack(vars1).mean(0))
    torch.testing.assert_close(net[4].running_mean, torch.stack(means2).mean(0))
    torch.testing.assert_close(net[4].running_var, torch.stack(vars2).mean(0))
    assert net[1].momentum == 0.1


def test_recalibrate_bn_supernet_equals_extracted_and_touches_only_the_prefix():
    net = randomized("mbv3-cifar", 10)
    cfg = net.min_config()
    batches = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    static = recalibrate_bn(net.extract(cfg), None, batches)
    full_before = net.blocks[0].dw_bn.running_mean.clone()
    recalibrate_bn(net, cfg, batches)
    mid = net.blocks[0].middle_channels(3)
    torch.testing.assert_close(net.blocks[0].dw_bn.running_mean[:mid], static.blocks[1].depthwise[1].running_mean)
    torch.testing.assert_close(net.blocks[0].dw_bn.running_var[:mid], static.blocks[1].depthwise[1].running_var)
    assert torch.equal(net.blocks[0].dw_bn.running_mean[mid:], full_before[mid:])
    net.eval(), static.eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x, cfg), static(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        recalibrate_bn(net, cfg, [])


# ---- backends ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpp", "triton", "cuda"])
def test_supernet_backend_matches_torch(backend):
    device = require_backend(backend)
    torch.manual_seed(seed())
    # small enough for the Triton interpreter: width 0.35, 8x8 images, two images
    # eval mode: at 8 px the last BNs would normalise 2 values a channel in training mode, which turns float
    # rounding differences between backends into 1e-3 output differences
    net = build_supernet("mbv3-cifar", 10, width_mult=0.35, dropout=0.0).to(device).eval()
    for p in net.parameters():  # transforms off identity, so their gradients are exercised
        if p.shape[0] == p.shape[-1] and p.dim() == 2:
            p.data.add_(0.05 * torch.randn_like(p))
    cfg = net.sample_config(torch.Generator().manual_seed(seed()))
    x = torch.randn(2, 3, 8, 8, device=device)
    outs = {}
    for name in ("torch", backend):
        net.zero_grad()
        net.set_backend(name)
        y = net(x, cfg)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        outs[name] = (y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[backend][0], outs["torch"][0], rtol=1e-4, atol=1e-4)
    assert outs[backend][1].keys() == outs["torch"][1].keys()
    for n, g in outs["torch"][1].items():
        torch.testing.assert_close(outs[backend][1][n], g, rtol=1e-3, atol=1e-4, msg=n)


def test_package_exports():
    assert deps_fast.build_supernet is build_supernet and deps_fast.SubnetConfig is SubnetConfig
