"""Process-group setup for data-parallel training under torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in
one process. Backend: NCCL when CUDA is used, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes (or run alone). device: cpu, cuda or cuda:N (the
    CLI vocabulary, runtime/cli.py; cuda:N in a single process only: under torchrun each process
    takes the GPU of its LOCAL_RANK)."""
    from runtime.errors import BackendUnavailableError, UsageError
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device {device} requested but CUDA is not available")
    if device.startswith("cuda:"):
        if world > 1:
            raise UsageError(f"--device {device}: under torchrun pass --device cuda (each process takes the GPU "
                             "of its LOCAL_RANK)")
        local = int(device.split(":", 1)[1])
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def reduce_mean(values: Dict[str, float], device) -> Dict[str, float]:
    """Average scalar values over all processes (for logging)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}
