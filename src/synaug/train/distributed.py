"""Data-parallel training over several processes (one per GPU) with DistributedDataParallel.

The same training code runs in one process or under ``torchrun --nproc_per_node N``: torchrun
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and :func:`init_distributed`
joins that process group (NCCL on CUDA, gloo on the CPU) the first time the trainer runs.
Then:

- ``batch_size`` stays the *global* batch: every rank draws the same seeded permutation and
  takes its own contiguous slice of each batch (:func:`rank_slice`), so N processes see the
  images of one single-process epoch, batch for batch, and the loss is scaled so that
  DDP's gradient average equals the gradient of the global batch mean;
- BatchNorm normalises with each rank's slice (as usual under DDP; SyncBatchNorm only exists
  on GPUs and costs a reduction per layer), and random augmentation is seeded per rank, so
  results match single-process training within a tolerance, not bit for bit;
- per-epoch statistics are summed over the ranks (:func:`all_reduce_sum`), so every rank
  holds the same history;
- only rank 0 should write files (:func:`is_main_process`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank among ``world_size`` processes, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun describes in the environment (once); a single process otherwise.

    On CUDA each process uses GPU ``LOCAL_RANK``; ``device`` gives the kind (cuda or cpu).
    """
    if dist.is_available() and dist.is_initialized():
        return current_context(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, device)
    if not dist.is_available():
        raise SynaugError("WORLD_SIZE is set but this PyTorch build has no torch.distributed; run a single process.")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise SynaugError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; start at most that many processes per node.")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(_destroy)
    return current_context(device)


def current_context(device: torch.device | None = None) -> DistributedContext:
    """The context of a running process group, or of a single process when there is none."""
    device = torch.device("cpu") if device is None else device
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device)


def is_main_process() -> bool:
    """True in rank 0 of a process group, and in a single process: the one that writes files."""
    return current_context().is_main


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else as is."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def rank_slice(index: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """This rank's contiguous part of a global batch of indices (sizes differ by at most one)."""
    if not context.distributed:
        return index
    return index.tensor_split(context.world_size)[context.rank]


def rank_subset(data: LabeledImages, context: DistributedContext) -> LabeledImages:
    """This rank's contiguous part of ``data`` (all of it in a single process)."""
    if not context.distributed:
        return data
    return data.subset(rank_slice(torch.arange(len(data)), context).numpy().astype(np.int64))


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: nn.Module, context: DistributedContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), which DDP only syncs before a forward."""
    if context.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def gather_rows(part: torch.Tensor, total: int, context: DistributedContext) -> torch.Tensor:
    """The rows of every rank's :func:`rank_subset` of ``total`` items, in order, on every rank."""
    if not context.distributed:
        return part
    sizes = [len(chunk) for chunk in torch.arange(total).tensor_split(context.world_size)]
    padded = part.new_zeros((max(sizes), *part.shape[1:]))
    padded[: len(part)] = part
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)])


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
