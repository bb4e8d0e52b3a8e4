"""Running a protocol under ``torchrun``: joining the process group and ordering the ranks.

Subjects are sharded by attribution chunk; stages that write shared files (cohort, store,
training, validity, randomization, results) run on rank 0 first and the other ranks then read
its outputs from the run directory.
"""
from __future__ import annotations

import os

import torch


def init_distributed(dev: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` (WORLD_SIZE > 1) joins the process group
    (NCCL on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def barrier(ctx) -> None:
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()


def rank0_first(ctx, fn):
    """Run ``fn`` on rank 0, then (from its cached outputs) on the other ranks."""
    if ctx.world == 1:
        return fn()
    out = fn() if ctx.rank == 0 else None
    barrier(ctx)
    return out if ctx.rank == 0 else fn()


def use_ddp(ctx) -> bool:
    """Whether every rank trains one model together (DistributedDataParallel) rather than rank 0
    training alone: ``run.distributed_training`` ``ddp``, or ``auto`` on CUDA."""
    mode = ctx.protocol.run.distributed_training
    return ctx.world > 1 and (mode == "ddp" or (mode == "auto" and ctx.device.type == "cuda"))
