"""What the recorder needs from torch.distributed: who keeps records, and two reductions.

- DDP: after ``backward()`` every rank's ``.grad`` holds the same averaged gradient, so
  parameter metrics need no communication. Activation statistics are local to each rank's
  share of the batch; on recorded steps they are summed over all ranks (one all-reduce of a
  small vector), so rank 0 sees the statistics of the whole global batch.
- FSDP2 / DTensor: ``.grad`` and the parameters are shards. Per-parameter sums of squares and
  non-finite counts are computed on the local shard and summed over the mesh dimensions the
  tensor is sharded on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: The one process that keeps records and writes them: the recorder's and the trainer's rank 0.
MAIN_RANK = 0


def is_main_rank(rank: int) -> bool:
    """Whether ``rank`` is the process that keeps records and writes the run (rank 0)."""
    return rank == MAIN_RANK


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def keeps_records(self) -> bool:
        return is_main_rank(self.rank)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_ranks() -> Ranks:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def all_reduce_sum(t: torch.Tensor, group: Any = None) -> None:
    """In-place sum over ``group`` (default: all ranks)."""
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)


def is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a plain tensor is its own shard)."""
    return t.to_local() if is_dtensor(t) else t


def shard_groups(t: torch.Tensor) -> tuple[Any, ...]:
    """Process groups of the mesh dimensions ``t`` is sharded on (empty: replicated or plain)."""
    if not is_dtensor(t):
        return ()
    mesh = t.device_mesh
    groups = []
    for dim, placement in enumerate(t.placements):
        if placement.is_shard():
            groups.append(mesh.get_group(dim))
    return tuple(groups)
