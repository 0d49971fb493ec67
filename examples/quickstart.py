"""Quickstart: one elastic depthwise layer, every backend available here, checked against the reference.

A supernet owns one 7x7 depthwise weight for 240 channels; a subnet uses its first c channels and the center
k x k window. This runs three subnet shapes through every backend this machine has, forward and backward,
and prints the largest difference from deps_fast.reference and the time per call.
"""
import time

import torch

import deps_fast
from deps_fast import reference


def main():
    torch.manual_seed(0)
    weight = torch.randn(240, 1, 7, 7, requires_grad=True)  # the shared supernet weight
    transforms = {5: torch.eye(25, requires_grad=True), 3: torch.eye(9, requires_grad=True)}  # OFA's matrices
    usable = [name for name, why in deps_fast.available_backends("cpu").items() if why is None]
    print(f"deps_fast {deps_fast.__version__}, torch {torch.__version__}; CPU backends here: {usable}")
    for name, why in deps_fast.available_backends("cpu").items():
        if why:
            print(f"  {name}: unavailable ({why})")
    print(f"{'subnet (c, k, stride)':>22} {'backend':>8} {'max |diff|':>11} {'fwd+bwd ms':>11}")
    for c, k, stride in [(72, 3, 1), (120, 5, 2), (240, 7, 1)]:
        x = torch.randn(16, c, 28, 28, requires_grad=True)
        ref = reference.elastic_depthwise_conv2d(x, weight, k, stride, transforms)
        ref_grads = torch.autograd.grad(ref.square().sum(), (x, weight))
        for backend in usable:
            y = deps_fast.elastic_depthwise_conv2d(x, weight, k, stride, transforms, backend=backend)
            grads = torch.autograd.grad(y.square().sum(), (x, weight))
            diff = max((a - b).abs().max().item() for a, b in zip((y,) + grads, (ref,) + ref_grads))
            start = time.perf_counter()
            for _ in range(5):
                y = deps_fast.elastic_depthwise_conv2d(x, weight, k, stride, transforms, backend=backend)
                torch.autograd.grad(y.square().sum(), (x, weight))
            ms = (time.perf_counter() - start) / 5 * 1e3
            print(f"{str((c, k, stride)):>22} {backend:>8} {diff:>11.2e} {ms:>11.2f}")
            assert diff < 1e-3, f"backend {backend} disagrees with the reference by {diff}"


if __name__ == "__main__":
    main()
