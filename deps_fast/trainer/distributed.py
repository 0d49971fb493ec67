"""torchrun / DDP plumbing: process group, device per rank, and one all-reduce per optimizer step.

Gradients are averaged by hand rather than by a DDP wrapper: a sandwich step runs several subnets through the
same parameters, and DDP would all-reduce after every backward. Here the local gradients of all subnets are
summed first and then averaged across ranks once, in one flat buffer that also carries the step's control
flags (stop requested, non-finite loss) so every rank takes the same decision.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (rank 0 of 1 when run alone); rank 0 writes all files."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device_request: str) -> tuple[World, torch.device]:
    """The process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), pick_device(device_request, 0)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request, local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank), device


def pick_device(request: str, local_rank: int) -> torch.device:
    if request in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(request)
    except RuntimeError as exc:
        raise ValueError(f"device={request!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={request!r} cannot train; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={request!r} but this machine has no CUDA device; use cpu or auto")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    return device


def sync_step(params: Iterable[torch.nn.Parameter], world: World, flags: list[float]) -> list[float]:
    """Average the gradients over ranks (one all-reduce) and return the flags summed over ranks.
    Every rank ran the same subnets, so the parameters without a gradient (blocks a shallow subnet skips,
    transform matrices at k = 7) are the same everywhere; they stay None, as in a single process, so SGD
    applies neither momentum nor weight decay to them."""
    if world.size == 1:
        return flags
    params = [p for p in params if p.grad is not None]
    device = params[0].grad.device if params else torch.device("cpu")
    flat = torch.cat([p.grad.reshape(-1).float() for p in params] +
                     [torch.tensor(flags, dtype=torch.float32, device=device)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad = (flat[offset:offset + n] / world.size).view_as(p.grad).to(p.grad.dtype)
        offset += n
    return flat[offset:].tolist()


def all_agree(world: World, ok: bool) -> bool:
    """True on every rank when `ok` is True on every rank (one all-reduce), so a setup refusal on one rank
    stops all of them alike instead of leaving the others waiting in the next collective."""
    if world.size == 1:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0])
    dist.all_reduce(flag)
    return flag.item() == 0.0


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
