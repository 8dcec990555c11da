"""One process, or many under torchrun: the rank, the device, and a gather that keeps gradients."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from squeeze_span.runtime import resolve_device

# torch 2.x marks the autograd-aware collectives of torch.distributed.nn.functional as
# deprecated in favour of a private module; they are the public ones, so keep them quiet.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_", category=FutureWarning)


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), if any.

    NCCL on GPUs, gloo on CPUs; each process takes the GPU of its local rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext(0, 1, resolve_device(device))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), resolved)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0; gradients flow back to each rank's slice.

    VICReg's variance and covariance are statistics of the batch, so they must see the
    global batch: with this gather, N ranks of B/N images compute the same loss as one
    process of B images.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def all_gather_objects(value: object) -> list[object]:
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def max_over_ranks(value: float) -> float:
    """The largest ``value`` of all ranks, on every rank: what ranks must agree on (when to stop, how far
    a time budget is spent) they take from the slowest."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any: ranks must agree on when to stop."""
    return bool(max_over_ranks(float(flag)))


def rank() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
