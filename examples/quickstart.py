"""Quickstart: the fused ops on every backend available here, checked against the reference.

A supernet owns one 7x7 depthwise weight for 240 channels; a subnet uses its first c channels and the center
k x k window. This runs three subnet shapes through every backend this machine has, forward and backward,
and prints the largest difference from deps_fast.reference and the time per call; then the same for the
distillation loss of a subnet (soft CE against the max net + label-smoothed CE).
"""
import time

import torch

import deps_fast
from deps_fast import reference


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference relative to the largest reference value (weight gradients sum ~10^4 terms)."""
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def main():
    torch.manual_seed(0)
    weight = torch.randn(240, 1, 7, 7, requires_grad=True)  # the shared supernet weight
    transforms = {5: torch.eye(25, requires_grad=True), 3: torch.eye(9, requires_grad=True)}  # OFA's matrices
    usable = [name for name, why in deps_fast.available_backends("cpu").items() if why is None]
    print(f"deps_fast {deps_fast.__version__}, torch {torch.__version__}; CPU backends here: {usable}")
    for name, why in deps_fast.available_backends("cpu").items():
        if why:
            print(f"  {name}: unavailable ({why})")
    print(f"{'subnet (c, k, stride)':>22} {'backend':>8} {'rel. diff':>11} {'fwd+bwd ms':>11}")
    for c, k, stride in [(72, 3, 1), (120, 5, 2), (240, 7, 1)]:
        x = torch.randn(16, c, 28, 28, requires_grad=True)
        ref = reference.elastic_depthwise_conv2d(x, weight, k, stride, transforms)
        ref_grads = torch.autograd.grad(ref.square().sum(), (x, weight))
        for backend in usable:
            y = deps_fast.elastic_depthwise_conv2d(x, weight, k, stride, transforms, backend=backend)
            grads = torch.autograd.grad(y.square().sum(), (x, weight))
            diff = max(_rel(a, b) for a, b in zip((y,) + grads, (ref,) + ref_grads))
            start = time.perf_counter()
            for _ in range(5):
                y = deps_fast.elastic_depthwise_conv2d(x, weight, k, stride, transforms, backend=backend)
                torch.autograd.grad(y.square().sum(), (x, weight))
            ms = (time.perf_counter() - start) / 5 * 1e3
            print(f"{str((c, k, stride)):>22} {backend:>8} {diff:>11.2e} {ms:>11.2f}")
            assert diff < 1e-4, f"backend {backend} disagrees with the reference by {diff}"

    print(f"{'loss (B, V)':>22} {'backend':>8} {'rel. diff':>11} {'fwd+bwd ms':>11}")
    for B, V in [(256, 10), (256, 1000)]:
        student = torch.randn(B, V, requires_grad=True)
        teacher, target = torch.randn(B, V), torch.randint(0, V, (B,))
        kw = dict(label_smoothing=0.1)
        ref = reference.distillation_loss(student, teacher, target, **kw)
        (ref_grad,) = torch.autograd.grad(ref, student)
        for backend in usable:
            start = time.perf_counter()
            for _ in range(5):
                loss = deps_fast.distillation_loss(student, teacher, target, **kw, backend=backend)
                (grad,) = torch.autograd.grad(loss, student)
            ms = (time.perf_counter() - start) / 5 * 1e3
            diff = max(_rel(loss, ref), _rel(grad, ref_grad))
            print(f"{str((B, V)):>22} {backend:>8} {diff:>11.2e} {ms:>11.2f}")
            assert diff < 1e-4, f"backend {backend} disagrees with the reference by {diff}"


if __name__ == "__main__":
    main()
