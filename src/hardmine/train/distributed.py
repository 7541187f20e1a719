"""The only module that talks to ``torch.distributed``; one rank without it.

Mining needs two collectives per epoch and none per step: gathering every
rank's observations to rank 0, and broadcasting rank 0's plan back.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun and the deepspeed launcher set LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_columns(columns: dict[str, np.ndarray], dst: int = 0) -> dict[str, np.ndarray] | None:
    """Concatenate every rank's equally named 1-D columns on rank ``dst``.

    Each column keeps its own dtype (ids int64, losses float32: packing them
    into one low-precision tensor corrupts large ids). Counts may differ per
    rank: columns are padded to the longest, then trimmed. Other ranks get None.
    """
    if not is_distributed():
        return {k: np.asarray(v) for k, v in columns.items()}
    device = _device()
    size = torch.tensor([len(next(iter(columns.values())))], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    out: dict[str, np.ndarray] = {}
    for name in sorted(columns):  # the same order on every rank
        local = torch.as_tensor(np.ascontiguousarray(columns[name]))
        padded = torch.zeros(longest, dtype=local.dtype, device=device)
        padded[: local.numel()] = local.to(device)
        parts = [torch.zeros_like(padded) for _ in range(world_size())]
        dist.all_gather(parts, padded)
        out[name] = np.concatenate([p[:c].cpu().numpy() for p, c in zip(parts, counts)])
    return out if rank() == dst else None


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled; small objects only)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly (a process that exits without it can abort in teardown)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
