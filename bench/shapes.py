"""The depthwise layer shapes of the OFA MobileNetV3 spaces (METHOD.md section 2), for benchmarks.

Each elastic stage has a first block (stride, input width of the previous stage) and following blocks (stride
1, the stage's own width); the depthwise layer sees the middle width make_divisible(c_in * e, 8).
"""
from __future__ import annotations

WIDTHS = (24, 40, 80, 112, 160)
STRIDES = {"mbv3": (2, 2, 2, 1, 2), "mbv3-cifar": (1, 2, 2, 1, 2)}
STEM_STRIDE = {"mbv3": 2, "mbv3-cifar": 1}
FIRST_WIDTH = 16  # the fixed first MBConv's output


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of `divisor`, never below 90% of `value` (and at least `divisor`)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def depthwise_layers(space: str, resolution: int, expand_ratios=(3, 4, 6)) -> list[dict]:
    """One entry per distinct (stage, first/other block, e): channels, input size, stride."""
    size = resolution // STEM_STRIDE[space]
    c_in, layers = FIRST_WIDTH, []
    for stage, (width, stride) in enumerate(zip(WIDTHS, STRIDES[space]), start=1):
        for first in (True, False):
            block_in, block_stride = (c_in, stride) if first else (width, 1)
            for e in expand_ratios:
                layers.append(dict(space=space, stage=stage, block="first" if first else "other", e=e,
                                   c=make_divisible(block_in * e), hw=size, stride=block_stride))
            if first:
                size = (size - 1) // stride + 1
        c_in = width
    return layers
