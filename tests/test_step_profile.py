"""bench/step_profile.py: every profiled op lands in the category it belongs to, and the categories add up to the
wall time (so the shares bench_step --profile reports are shares of the step)."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import step_profile  # noqa: E402

from deps_fast import ops  # noqa: E402


def _step(i):
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    pw = torch.randn(16, 8, 1, 1, requires_grad=True)
    dw = torch.randn(16, 1, 3, 3, requires_grad=True)
    h = F.conv2d(x, pw)                                            # pointwise
    h = F.batch_norm(h, None, None, training=True)                 # BatchNorm
    h = F.hardswish(h)                                             # activation
    h = h.contiguous(memory_format=torch.channels_last)            # a layout copy
    h = ops.elastic_depthwise_conv2d(h, dw, 3, backend="cpp")      # our depthwise
    h = F.conv2d(h, dw, None, 1, 1, 1, 16)                         # a depthwise conv through PyTorch
    loss = ops.distillation_loss(h.mean((2, 3)), target=torch.zeros(4, dtype=torch.long))
    loss.backward()


def test_categories_cover_the_ops_and_add_up_to_the_wall_time():
    prof = step_profile.profile_step(_step, steps=2, warmup=1)
    ms = prof["ms_per_step"]
    for category in ("pointwise convs", "batchnorm fwd+bwd", "depthwise conv", "activations", "layout copies",
                     "loss"):
        assert ms[category] > 0, f"nothing classified as {category}: {ms}"
    assert abs(sum(ms.values()) - prof["wall_ms_per_step"]) < 0.02 * prof["wall_ms_per_step"] + 0.1
    assert abs(sum(prof["share"].values()) - 1.0) < 0.02


class _Event:
    def __init__(self, name, shapes):
        self.name, self.input_shapes = name, shapes


def test_convolutions_are_told_apart_by_their_shapes():
    # forward: (x, weight, ...); backward: (grad_out, x, weight, ...); the 1-channel stem is not depthwise
    assert step_profile.classify(_Event("aten::convolution", [[8, 32, 7, 7], [32, 1, 5, 5], []])) == "depthwise conv"
    assert step_profile.classify(_Event("aten::convolution", [[8, 32, 7, 7], [64, 32, 1, 1], []])) == "pointwise convs"
    assert step_profile.classify(_Event("aten::convolution", [[8, 1, 28, 28], [16, 1, 3, 3]])) == "pointwise convs"
    assert step_profile.classify(_Event("aten::convolution_backward",
                                        [[8, 32, 4, 4], [8, 32, 7, 7], [32, 1, 7, 7]])) == "depthwise conv"
    assert step_profile.classify(_Event("aten::copy_", [[1], [1]])) == "layout copies"
    assert step_profile.classify(_Event("aten::empty", [])) is None
