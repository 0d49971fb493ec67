"""The depthwise layer shapes of an OFA supernet (docs/method.md §2), for benchmarks: read off the network
that `deps_fast.build_supernet` builds, so the benchmark always measures the layers the trainer runs.

Each elastic stage has a first block (the stage's stride, the previous stage's width coming in) and following
blocks (stride 1, the stage's own width); the depthwise layer of a block sees its middle width for each e.
"""
from __future__ import annotations

from deps_fast.models import build_supernet


def depthwise_layers(space: str, resolution: int, expand_ratios=(3, 4, 6)) -> list[dict]:
    """One entry per distinct (stage, first/other block, e): channels, input size, stride."""
    net = build_supernet(space, num_classes=10, expand_ratios=expand_ratios)
    size = (resolution - 1) // net.stem.conv.stride[0] + 1  # the stem's 3x3 conv, padding 1
    size = (size - 1) // net.first_block.stride + 1
    layers = []
    for stage, indices in enumerate(net.stage_blocks[:net.num_elastic_stages], start=1):
        for block_kind, index in (("first", indices[0]), ("other", indices[1])):
            block = net.blocks[index]
            for e in expand_ratios:
                layers.append(dict(space=space, stage=stage, block=block_kind, e=e, c=block.middle_channels(e),
                                   hw=size, stride=block.stride))
            size = (size - 1) // block.stride + 1
    return layers
