"""OFA checkpoint import/export (deps_fast.models.ofa_import).

The expected OFA names and shapes below are written out by hand from OFA's source
(ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py, ofa_proxyless.py, elastic_nn/modules/
dynamic_layers.py, dynamic_op.py, ofa/utils/layers.py, pytorch_modules.py), not derived from our mapping.
"""
import warnings

import pytest
import torch

from deps_fast.models import build_supernet, load_ofa_state_dict
from deps_fast.models.ofa_import import ImportReport, to_ofa_state_dict

from helpers import seed


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to OpenMP spinning on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randomize(net, gen):
    """Every tensor random, BN statistics and kernel-transform matrices included."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (), generator=gen)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif ".transforms." in name:
                t.copy_(torch.eye(t.shape[0]) + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=gen))
    return net


def load_quietly(net, sd, **kw):
    """Load, failing on any warning except the BN-eps note (proxyless: OFA uses eps 1e-3)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = load_ofa_state_dict(net, sd, **kw)
    for w in caught:
        assert "eps" in str(w.message) and report.ok, str(w.message)
    return report


def small(space="mbv3", **kw):
    """A narrow supernet (CPU time): the layout, and so every name, is that of width 1.0."""
    return build_supernet(space, 10, **{"width_mult": 0.5, **kw})


# ---- 1. round trip --------------------------------------------------------------------------------------
@pytest.mark.parametrize("space,kw", [("mbv3", {}), ("mbv3-cifar", {"width_mult": 0.75}),
                                      ("proxyless", {"width_mult": 0.6}),
                                      ("mbv3", {"kernel_sizes": (3, 7), "expand_ratios": (2, 6)})])
def test_round_trip(space, kw):
    s = seed()
    gen = torch.Generator().manual_seed(s)
    src = randomize(small(space, **kw), gen).eval()
    dst = small(space, **kw).eval()
    ofa = to_ofa_state_dict(src)
    assert len(ofa) == len(src.state_dict())
    report = load_quietly(dst, ofa)
    assert report.ok and report.loaded == len(ofa), (s, str(report))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), (s, k)
    x = torch.randn(1, 3, 16, 16, generator=gen)
    configs = [src.max_config(), src.min_config()] + [src.sample_config(gen) for _ in range(2)]
    with torch.no_grad():
        for config in configs:
            assert torch.equal(src(x, config), dst(x, config)), (s, str(config))


def test_load_copies_into_fresh_net_and_changes_outputs():
    gen = torch.Generator().manual_seed(seed())
    src, dst = randomize(small(), gen).eval(), small().eval()
    x = torch.randn(1, 3, 16, 16, generator=gen)
    with torch.no_grad():
        assert not torch.equal(src(x), dst(x))
        load_quietly(dst, to_ofa_state_dict(src))
        assert torch.equal(src(x), dst(x))


# ---- 2. OFA's names and shapes, written out from OFA's source ---------------------------------------------
def _mbv3_expected():
    """OFAMobileNetV3(n_classes=1000, width_mult=1.0, ks_list=[3,5,7], expand_ratio_list=[3,4,6],
    depth_list=[2,3,4]): widths 16 | 16 | 24 40 80 112 160 | 960 1280; SE in stages 2, 4, 5; max middle
    width make_divisible(round(in * 6), 8); SE width make_divisible(mid // 4, 8)."""
    return {
        "first_conv.conv.weight": (16, 3, 3, 3),
        "first_conv.bn.running_var": (16,),
        "first_conv.bn.num_batches_tracked": (),
        "blocks.0.conv.depth_conv.conv.weight": (16, 1, 3, 3),          # static MBConvLayer, expand 1
        "blocks.0.conv.depth_conv.bn.weight": (16,),
        "blocks.0.conv.point_linear.conv.weight": (16, 16, 1, 1),
        "blocks.0.conv.point_linear.bn.running_mean": (16,),
        "blocks.1.conv.inverted_bottleneck.conv.conv.weight": (96, 16, 1, 1),   # DynamicConv2d.conv
        "blocks.1.conv.inverted_bottleneck.bn.bn.weight": (96,),                # DynamicBatchNorm2d.bn
        "blocks.1.conv.depth_conv.conv.conv.weight": (96, 1, 7, 7),             # DynamicSeparableConv2d.conv
        "blocks.1.conv.depth_conv.conv.7to5_matrix": (25, 25),
        "blocks.1.conv.depth_conv.conv.5to3_matrix": (9, 9),
        "blocks.1.conv.depth_conv.bn.bn.running_var": (96,),
        "blocks.1.conv.point_linear.conv.conv.weight": (24, 96, 1, 1),
        "blocks.1.conv.point_linear.bn.bn.bias": (24,),
        "blocks.2.conv.inverted_bottleneck.conv.conv.weight": (144, 24, 1, 1),
        # stage 2 (blocks 5-8, width 40, SE): first block mid 144 -> SE 40; the others mid 240 -> SE 64
        "blocks.5.conv.depth_conv.se.fc.reduce.weight": (40, 144, 1, 1),
        "blocks.5.conv.depth_conv.se.fc.reduce.bias": (40,),
        "blocks.5.conv.depth_conv.se.fc.expand.weight": (144, 40, 1, 1),
        "blocks.5.conv.depth_conv.se.fc.expand.bias": (144,),
        "blocks.6.conv.depth_conv.se.fc.reduce.weight": (64, 240, 1, 1),
        "blocks.8.conv.point_linear.conv.conv.weight": (40, 240, 1, 1),
        "blocks.13.conv.inverted_bottleneck.conv.conv.weight": (480, 80, 1, 1),
        "blocks.13.conv.depth_conv.se.fc.expand.weight": (480, 120, 1, 1),
        "blocks.20.conv.depth_conv.se.fc.reduce.weight": (240, 960, 1, 1),
        "blocks.20.conv.point_linear.bn.bn.num_batches_tracked": (),
        "final_expand_layer.conv.weight": (960, 160, 1, 1),
        "final_expand_layer.bn.weight": (960,),
        "feature_mix_layer.conv.weight": (1280, 960, 1, 1),
        "classifier.linear.weight": (1000, 1280),
        "classifier.linear.bias": (1000,),
    }


def test_ofa_names_mbv3():
    sd = to_ofa_state_dict(build_supernet("mbv3", 1000))
    for key, shape in _mbv3_expected().items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, (key, tuple(sd[key].shape), shape)
    # first conv 6 + first block 12 + 20 blocks x 20 (+4 SE in the 12 blocks of stages 2, 4, 5)
    # + final expand 6 + feature mix 1 (no BN) + classifier 2
    assert len(sd) == 6 + 12 + 20 * 20 + 12 * 4 + 6 + 1 + 2 == 475
    assert not any(k.startswith("blocks.21.") for k in sd)
    assert not any(k.startswith("feature_mix_layer.bn") for k in sd)
    se_blocks = {int(k.split(".")[1]) for k in sd if ".se." in k}
    assert se_blocks == set(range(5, 9)) | set(range(13, 21))
    assert not any("inverted_bottleneck" in k for k in sd if k.startswith("blocks.0."))


def test_ofa_names_proxyless():
    """OFAProxylessNASNets(width_mult=1.3, ks_list=[3,5,7], expand_ratio_list=[3,4,6], depth_list=[2,3,4]):
    widths 40 | 24 | 32 56 104 128 248 | 416 | 1664; no SE, no final expand, feature mix with BN."""
    sd = to_ofa_state_dict(build_supernet("proxyless", 1000, width_mult=1.3))
    expected = {
        "first_conv.conv.weight": (40, 3, 3, 3),
        "blocks.0.conv.depth_conv.conv.weight": (40, 1, 3, 3),
        "blocks.0.conv.point_linear.conv.weight": (24, 40, 1, 1),
        "blocks.1.conv.inverted_bottleneck.conv.conv.weight": (144, 24, 1, 1),
        "blocks.21.conv.inverted_bottleneck.conv.conv.weight": (1488, 248, 1, 1),
        "blocks.21.conv.depth_conv.conv.7to5_matrix": (25, 25),
        "blocks.21.conv.point_linear.conv.conv.weight": (416, 1488, 1, 1),
        "feature_mix_layer.conv.weight": (1664, 416, 1, 1),
        "feature_mix_layer.bn.running_var": (1664,),
        "classifier.linear.weight": (1000, 1664),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(sd) == 6 + 12 + 21 * 20 + 6 + 2 == 446
    assert not any(".se." in k or k.startswith(("blocks.22.", "final_expand")) for k in sd)


def test_ofa_names_two_kernel_sizes():
    """ks_list=[3, 7]: OFA registers only '7to3_matrix' (9x9)."""
    sd = to_ofa_state_dict(small(kernel_sizes=(3, 7)))
    assert tuple(sd["blocks.1.conv.depth_conv.conv.7to3_matrix"].shape) == (9, 9)
    assert not any("7to5" in k or "5to3" in k for k in sd)
    assert not any("matrix" in k for k in to_ofa_state_dict(small(kernel_sizes=(5,))))


# ---- 3. reporting ---------------------------------------------------------------------------------------
def _clean_ofa():
    return {k: v.clone() for k, v in to_ofa_state_dict(randomize(small(), torch.Generator().manual_seed(0))).items()}


def test_unexpected_key_reported_and_warned():
    sd = _clean_ofa()
    sd["blocks.1.conv.depth_conv.conv.9to7_matrix"] = torch.eye(49)
    with pytest.warns(UserWarning, match="9to7_matrix"):
        report = load_ofa_state_dict(small(), sd)
    assert report.unexpected == ("blocks.1.conv.depth_conv.conv.9to7_matrix",)
    assert not report.missing and not report.mismatched and not report.ok
    assert report.loaded == len(sd) - 1


def test_missing_key_reported_and_warned():
    sd = _clean_ofa()
    del sd["blocks.5.conv.depth_conv.se.fc.expand.bias"]
    net = small()
    before = net.blocks[4].se.expand.bias.clone()
    with pytest.warns(UserWarning, match="missing"):
        report = load_ofa_state_dict(net, sd)
    assert report.missing == ("blocks.4.se.expand.bias",)
    assert torch.equal(net.blocks[4].se.expand.bias, before)
    assert "blocks.4.se.expand.bias" in str(report)


def test_mismatched_shape_reported_not_copied():
    sd = _clean_ofa()
    sd["blocks.1.conv.depth_conv.conv.7to5_matrix"] = torch.zeros(9, 9)
    net = small()
    with pytest.warns(UserWarning, match="shape mismatch"):
        report = load_ofa_state_dict(net, sd)
    assert report.mismatched == (("blocks.0.depthwise.transforms.5", (9, 9), (25, 25)),)
    assert not report.missing and not report.unexpected
    assert torch.equal(net.blocks[0].depthwise.transforms["5"], torch.eye(25))


def test_strict_raises_naming_keys_and_copies_nothing():
    sd = _clean_ofa()
    del sd["classifier.linear.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["first_conv.conv.weight"] = torch.zeros(16, 3, 5, 5)
    net = small()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_ofa_state_dict(net, sd, strict=True)
    for name in ("classifier.bias", "extra.weight", "stem.conv.weight"):
        assert name in str(err.value)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_num_batches_tracked_may_be_absent_either_way():
    sd = {k: v for k, v in _clean_ofa().items() if not k.endswith("num_batches_tracked")}
    sd["feature_mix_layer.bn.num_batches_tracked"] = torch.tensor(3)  # a BN mbv3 has no place for
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_ofa_state_dict(small(), sd, strict=True)
    assert report.ok and report.loaded == len(sd) - 1


def test_wrappers_prefix_and_legacy_names():
    gen = torch.Generator().manual_seed(seed())
    src = randomize(small(), gen)
    sd = to_ofa_state_dict(src)
    # OFA's run manager checkpoint, saved from DataParallel, with the pre-2020-11 `mobile_inverted_conv` name
    wrapped = {"epoch": 3, "best_acc": 0.5, "state_dict": {
        "module." + k.replace("blocks.3.conv.", "blocks.3.mobile_inverted_conv."): v for k, v in sd.items()}}
    dst = small()
    report = load_quietly(dst, wrapped, strict=True)
    assert report.ok and report.loaded == len(sd)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_bn_eps_note_warns_but_strict_accepts():
    net = small()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3
    with pytest.warns(UserWarning, match="eps"):
        report = load_ofa_state_dict(net, _clean_ofa(), strict=True)
    assert report.ok and report.notes


def test_bad_inputs():
    with pytest.raises(TypeError):
        load_ofa_state_dict(small(), [1, 2])
    with pytest.raises(TypeError):
        load_ofa_state_dict(small(), {"first_conv.conv.weight": [1.0]})
    with pytest.raises(TypeError):
        to_ofa_state_dict(torch.nn.Linear(2, 2))
    dup = {"blocks.1.conv.point_linear.bn.bn.bias": torch.zeros(16),
           "blocks.1.mobile_inverted_conv.point_linear.bn.bn.bias": torch.zeros(16)}
    with pytest.raises(ValueError, match="twice"):
        load_ofa_state_dict(small(), dup)
    net = small()
    net.space_name = "resnet"
    with pytest.raises(NotImplementedError, match="supports the spaces"):
        load_ofa_state_dict(net, {})


def test_report_is_frozen_and_readable():
    report = ImportReport(loaded=2, missing=("a",), unexpected=("b",), mismatched=(("c", (1,), (2,)),))
    text = str(report)
    assert "a" in text and "b" in text and "c: checkpoint [1], supernet [2]" in text
    with pytest.raises(Exception):
        report.loaded = 3
    with pytest.warns(UserWarning, match="no key matched"):
        load_ofa_state_dict(small(), {"x": torch.zeros(1)})


# ---- 5. what each OFA tensor means, independently of the mapping -------------------------------------------------
_OFA_MEMBERS = {  # OFA's MBConvLayer members -> our ElasticMBConv attribute (conv, bn), from OFA's source
    "inverted_bottleneck": ("expand", "expand_bn"), "depth_conv": ("depthwise", "dw_bn"),
    "point_linear": ("project", "project_bn"),
}
_OFA_FIXED = {"first_conv": "stem", "final_expand_layer": "final_expand", "feature_mix_layer": "feature_mix"}


def _our_tensor(net, ofa_key):
    """The tensor of `net` that OFA's `ofa_key` means, by OFA's module structure (not by ofa_import's rules)."""
    parts = ofa_key.split(".")
    if parts[0] in _OFA_FIXED:  # first_conv.conv.weight, first_conv.bn.running_mean, ...
        return getattr(getattr(getattr(net, _OFA_FIXED[parts[0]]), parts[1]), parts[2])
    if parts[0] == "classifier":  # classifier.linear.weight
        return getattr(net.classifier, parts[2])
    assert parts[0] == "blocks" and parts[2] == "conv", ofa_key
    i, member, rest = int(parts[1]), parts[3], parts[4:]
    block = net.first_block if i == 0 else net.blocks[i - 1]
    if member == "depth_conv" and rest[0] == "se":  # depth_conv.se.fc.reduce.weight
        return getattr(getattr(block.se, rest[2]), rest[3])
    conv_name, bn_name = _OFA_MEMBERS[member]
    if rest[-1].endswith("_matrix"):  # depth_conv.conv.7to5_matrix: from 7x7 down to 5x5, keyed 5 here
        return getattr(block, conv_name).transforms[rest[-1].split("to")[1].split("_")[0]]
    module = getattr(block, conv_name if rest[0] == "conv" else bn_name)
    return getattr(module, rest[-1])  # static blocks: conv.weight; dynamic ones: conv.conv.weight


@pytest.mark.parametrize("space", ["mbv3", "proxyless"])
def test_each_ofa_tensor_lands_where_ofa_uses_it(space):
    """Values filled per OFA key land in the module OFA's structure says they belong to: a mapping error made
    alike in both directions (e.g. the two middle BNs swapped) passes the round trip but not this."""
    gen = torch.Generator().manual_seed(seed())
    net = small(space)
    keys = [k for k in to_ofa_state_dict(net) if not k.endswith("num_batches_tracked")]  # names: tested above
    ofa = {k: torch.randn(tuple(to_ofa_state_dict(net)[k].shape), generator=gen).abs() + 0.1 for k in keys}
    load_quietly(net, ofa)
    seen = set()
    for key in keys:
        ours = _our_tensor(net, key)
        assert id(ours) not in seen, f"{key}: two OFA keys mean one tensor"
        seen.add(id(ours))
        assert torch.equal(ours.detach(), ofa[key]), f"{key} did not land in the tensor OFA uses it as"
