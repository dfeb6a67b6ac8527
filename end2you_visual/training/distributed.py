"""Multi-GPU / multi-node training with torchrun: process group and collectives.

``torchrun --nproc-per-node 4 -m end2you_visual.cli.main train ...`` (or
``torchrun ... $(which e2y-visual) train ...``) sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU) and
each process trains on ``cuda:LOCAL_RANK``. Without those variables
everything here is a no-op for one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "teardown", "gather_objects", "all_reduce_sum",
           "broadcast_buffers"]

T = TypeVar("T")


@dataclass
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # this module created the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's variables, if any.

    ``device_type`` ("cuda" or "cpu") picks the backend: NCCL or gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)), created=False)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, created=True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: T, info: DistInfo) -> list[T]:
    """A list of every process's ``obj`` (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over processes, in place; returns it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy process ``src``'s buffers (BatchNorm statistics) to every process.

    DDP broadcasts them only at the start of each training forward pass, so
    after the last step of an epoch they differ; validation and the saved
    checkpoint must use one set.
    """
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=src)

