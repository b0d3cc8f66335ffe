"""Data-parallel training across the processes that ``torchrun`` starts.

``torchrun --nproc_per_node N -m napari_diffseg train …`` starts N copies of the command and
gives each its place in the job through environment variables (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). The helpers here turn those into a
``torch.distributed`` process group (NCCL when the ranks run on CUDA, each rank on
``cuda:LOCAL_RANK``; gloo on the CPU) and provide the few collectives the trainer needs.

Without those variables (or with ``WORLD_SIZE=1``) nothing here creates a process group and
every helper answers as for a single process: rank 0 of 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import distributed as dist

from napari_diffseg.engine.device import resolve_device

logger = logging.getLogger(__name__)


def env_world_size() -> int:
    """Number of processes of the job as torchrun announces it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's global rank as torchrun announces it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def env_local_rank() -> int:
    """This process's rank on its machine (0 without torchrun): the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes checkpoints and logs."""
    return rank() == 0


def rank_device(name: str = "auto") -> torch.device:
    """The device this rank trains on.

    In a distributed job ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (``auto`` falls back to
    the CPU when CUDA is missing) and ``cpu`` means the CPU; other names (``cuda:1``, ``mps``)
    are refused, since every rank would pick the same device. Outside a job this is
    :func:`~napari_diffseg.engine.device.resolve_device`.

    Raises:
        ValueError: the device cannot be used by the ranks of a distributed job.
    """
    if env_world_size() <= 1:
        return resolve_device(name)
    text = (name or "auto").strip().lower()
    if text in ("auto", "cuda"):
        if torch.cuda.is_available():
            local = env_local_rank()
            count = torch.cuda.device_count()
            if local >= count:
                raise ValueError(
                    f"rank with LOCAL_RANK={local} has no GPU: this machine has {count}; "
                    f"start at most {count} processes per node (--nproc_per_node)"
                )
            return torch.device("cuda", local)
        if text == "cuda":
            raise ValueError("device 'cuda' was asked for, but CUDA is not available here")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    raise ValueError(
        f"device {name!r} cannot be used by a distributed run: use 'auto' or 'cuda' (each rank "
        "takes cuda:LOCAL_RANK; restrict the GPUs with CUDA_VISIBLE_DEVICES) or 'cpu' (gloo)"
    )


def init_process_group(device: str = "auto") -> bool:
    """Join the process group torchrun's environment describes; True if this call created it.

    Does nothing (and returns False) without torchrun, with ``WORLD_SIZE=1`` or when a group
    already exists. The backend is NCCL when the ranks run on CUDA, gloo otherwise.
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dev = rank_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    logger.debug("rank %d of %d joined the %s process group on %s",
                 dist.get_rank(), dist.get_world_size(), dist.get_backend(), dev)
    return True


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Inside: the torchrun job's process group exists (see :func:`init_process_group`); it is
    destroyed on exit if this context created it."""
    created = init_process_group(device)
    try:
        yield
    finally:
        if created:
            destroy_process_group()


def shard(total: int, parts: int | None = None, index: int | None = None) -> slice:
    """Rows of a global batch of ``total`` that rank ``index`` of ``parts`` works on.

    Raises:
        ValueError: ``total`` is not divisible by ``parts``.
    """
    parts = world_size() if parts is None else parts
    index = rank() if index is None else index
    if total % parts:
        raise ValueError(
            f"batch size {total} is not divisible by the {parts} processes of the run: "
            f"use a multiple of {parts}"
        )
    size = total // parts
    return slice(index * size, (index + 1) * size)


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the summed gradient of its rows.

    When every rank computes the same loss from the gathered tensor, the summed gradient is
    W times this rank's share; DistributedDataParallel's averaging of the parameter gradients
    over the W ranks then gives exactly the gradient of the single-process loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(b, …) on each of W ranks -> (W b, …) in rank order, on every rank; differentiable.
    A single process gets ``x`` back."""
    if not is_distributed():
        return x
    return _GatherRows.apply(x)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (e.g. a stop request); one all-reduce."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_float(value: float | None, device: torch.device, src: int = 0) -> float | None:
    """Rank ``src``'s value (a float or None) on every rank; one broadcast."""
    if not is_distributed():
        return value
    t = torch.tensor([float("nan") if value is None else float(value), 0.0 if value is None
                      else 1.0], device=device, dtype=torch.float64)
    dist.broadcast(t, src=src)
    return float(t[0].item()) if t[1].item() > 0 else None
