"""Data-parallel helpers of the engine (torch.distributed; the process group is set up by the caller).

`train` runs data parallel whenever a process group with more than one rank is initialised: by
Ray Train's `TorchTrainer` (`pipelines.data_parallel`), by ``torchrun`` (`pipelines.train`), or by
a test that spawns processes. Each rank trains on its slice of every global batch
(`pipelines.engine.data.InfiniteBatchSampler`); gradients are averaged by
`DistributedDataParallel`; evaluation shards the validation images over the ranks and sums the
confusion matrices. The backends: gloo on the CPU, NCCL on GPUs (one GPU per rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process (``world_size == 1``: no process group, single process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> DistContext:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU otherwise (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor on the tensor's device)."""
    buf = tensor.detach().to(comm_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled)."""
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=comm_device())
    return holder[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """The ``obj`` of every rank, in rank order."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    Without SyncBatchNorm every rank updates its running statistics on its own slice; the model
    that is evaluated and checkpointed is rank 0's.
    """
    for buf in model.buffers():
        if buf.dtype.is_floating_point or buf.dtype in (torch.int64, torch.int32):
            tmp = buf.detach().to(comm_device()).clone()
            dist.broadcast(tmp, src=src)
            buf.copy_(tmp.to(buf.device))


def unused_parameters(
    model: nn.Module, crop_size: int, device: torch.device, channels_last: bool
) -> list[str]:
    """Names of trainable parameters that get no gradient from one forward/backward pass.

    `DistributedDataParallel` needs ``find_unused_parameters=True`` (an extra graph traversal per
    step) only when such parameters exist; this decides it once. The pass runs in eval mode at
    batch 1 (no BatchNorm statistics updated, no random numbers drawn) and its gradients are
    discarded.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, crop_size, crop_size, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        model(x).float().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
    return unused


def wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    """`DistributedDataParallel` around ``model`` (one device per rank)."""
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        output_device=device.index if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
        gradient_as_bucket_view=True,
    )
