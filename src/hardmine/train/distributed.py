"""The only module that talks to ``torch.distributed``; rank and world size are arguments.

Mining needs two collectives per epoch and none per step: gathering every
rank's observations to rank 0, and broadcasting rank 0's plan back. The
collectives take a :class:`Ranks` (this process's rank and the world size, as
the Trainer's ``args.process_index`` / ``args.world_size`` say) and touch
``torch.distributed`` only when the world has more than one rank. What they do
with the data is pure (:func:`pad_columns`, :func:`merge_rank_columns`), so
sharding and gathering are tested for several ranks inside one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size):
            raise ValueError(f"rank {self.rank} outside a world of {self.world_size} process(es)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def of(cls, args) -> "Ranks":
        """The ranks a ``TrainingArguments`` describes (``process_index``, ``world_size``)."""
        return cls(int(getattr(args, "process_index", 0)), int(getattr(args, "world_size", 1)))


def local_rank() -> int:
    """This process's rank on its machine (torchrun and the deepspeed launcher set LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _in_process_group(ranks: Ranks) -> bool:
    if ranks.world_size == 1:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{ranks} describe several processes, but no torch.distributed process group is initialised")
    return True


def _device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------ pure functions
def pad_columns(columns: Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Each 1-D column zero-padded to ``length`` (ranks exchange equal-sized buffers)."""
    out = {}
    for name, column in columns.items():
        column = np.asarray(column)
        if column.size > length:
            raise ValueError(f"column {name!r} holds {column.size} values, more than the padded length {length}")
        padded = np.zeros(length, dtype=column.dtype)
        padded[: column.size] = column
        out[name] = padded
    return out


def merge_rank_columns(parts: Sequence[Mapping[str, np.ndarray]], counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Every rank's columns (padded buffers, ``counts`` real values each) joined in rank order."""
    if len(parts) != len(counts) or not parts:
        raise ValueError(f"expected one count per rank, got {len(parts)} part(s) and {len(counts)} count(s)")
    names = sorted(parts[0])
    return {name: np.concatenate([np.asarray(part[name])[:count] for part, count in zip(parts, counts)]) for name in names}


# --------------------------------------------------------------- collectives
def gather_columns(columns: Mapping[str, np.ndarray], ranks: Ranks, dst: int = 0) -> dict[str, np.ndarray] | None:
    """Concatenate every rank's equally named 1-D columns on rank ``dst``; other ranks get None.

    Each column keeps its own dtype (ids int64, losses float32: packing them
    into one low-precision tensor corrupts large ids). Counts may differ per
    rank: buffers are padded to the longest, then trimmed.
    """
    if not _in_process_group(ranks):
        return {k: np.asarray(v) for k, v in columns.items()}
    device = _device()
    size = torch.tensor([len(next(iter(columns.values())))], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = pad_columns(columns, max(counts))
    parts: list[dict[str, np.ndarray]] = [{} for _ in range(ranks.world_size)]
    for name in sorted(padded):  # the same order on every rank
        local = torch.as_tensor(padded[name]).to(device)
        buffers = [torch.zeros_like(local) for _ in range(ranks.world_size)]
        dist.all_gather(buffers, local)
        for part, buffer in zip(parts, buffers):
            part[name] = buffer.cpu().numpy()
    return merge_rank_columns(parts, counts) if ranks.rank == dst else None


def broadcast_object(obj: Any, ranks: Ranks, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled; small objects only)."""
    if not _in_process_group(ranks):
        return obj
    box = [obj if ranks.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def barrier(ranks: Ranks) -> None:
    if _in_process_group(ranks):
        dist.barrier()


def current_ranks() -> Ranks:
    """The process group's view of this process (for code that runs before a Trainer exists)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def shutdown() -> None:
    """Leave the process group cleanly (a process that exits without it can abort in teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
