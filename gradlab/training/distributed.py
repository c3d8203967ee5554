"""Multi-process training launched by ``torchrun``: process group set-up and batch sharding.

``torchrun --nproc-per-node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the trainer
then wraps the model in DDP and each process takes its slice of every global batch. Only rank 0
writes the run store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gradlab.recorder.dist import is_main_rank


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return is_main_rank(self.rank)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process is rank 0 of a torchrun launch (or runs alone), read from the
    environment: still known after the process group is torn down."""
    return is_main_rank(int(os.environ.get("RANK", "0")))


def setup(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a single process."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's share of each global batch, epoch after epoch, without end.

    All ranks draw the same permutation (seeded by ``seed`` and the epoch), cut it into global
    batches of ``batch_size`` and take consecutive slices, so the union of the ranks' batches is
    exactly the batch a single process would have drawn: DDP's averaged gradient then equals the
    single-process gradient on the full batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} does not split over {world_size} processes: "
                f"pass a multiple of {world_size}"
            )
        if n < batch_size:
            raise ValueError(f"the training split has {n} samples, fewer than a batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local = batch_size // world_size

    def __iter__(self) -> Iterator[list[int]]:
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(self.n, generator=g)
            for start in range(0, self.n - self.batch_size + 1, self.batch_size):
                lo = start + self.rank * self.local
                yield order[lo : lo + self.local].tolist()
            epoch += 1

    def __len__(self) -> int:  # batches per epoch
        return self.n // self.batch_size
