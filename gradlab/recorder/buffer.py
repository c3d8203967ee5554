"""Where recorded values wait: a preallocated device buffer, batched copies, compact host chunks.

Each recorded step fills one row of a ``(capacity, width)`` float32 buffer on the device. When
the buffer is full its rows are copied to pinned host memory with ``non_blocking=True`` and an
event; the host reads that copy only later (at the next flush of the same pinned block, or
when asked for a frame), so recording never waits for the device.

On the host only the values that exist are kept: rows are grouped by which columns are valid
(the same pattern nearly every step) and stored as float32 blocks with the step of each row,
4 bytes per value plus 8 bytes per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Chunk:
    """Recorded values of consecutive rows that share one pattern of valid columns."""

    steps: np.ndarray  # int64, (rows,)
    cols: np.ndarray  # int64, (k,): buffer columns, or metric ids for host-made rows
    values: np.ndarray  # float32, (rows, k)

    @property
    def nbytes(self) -> int:
        return self.steps.nbytes + self.cols.nbytes + self.values.nbytes


@dataclass
class _Pending:
    event: torch.cuda.Event
    host: torch.Tensor
    steps: list[int]
    keys: list[bytes]
    slot: int


class RecordBuffer:
    """A device ring of rows, drained to host chunks in batches."""

    def __init__(self, width: int, capacity: int, device: torch.device, keep: bool,
                 on_rows: Callable[[np.ndarray, np.ndarray, np.ndarray], None]) -> None:
        self.width = width
        self.capacity = capacity
        self.device = device
        self.keep = keep
        self.rows = torch.zeros(capacity, width, dtype=torch.float32, device=device)
        self._filled = 0
        self._steps: list[int] = []
        self._keys: list[bytes] = []
        self._patterns: dict[bytes, np.ndarray] = {}
        self._pinned: list[torch.Tensor | None] = [None, None]
        self._next_slot = 0
        self._pending: list[_Pending] = []
        self._on_rows = on_rows  # receives (steps, valid mask (rows, width), values (rows, width))

    @property
    def device_bytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def row(self) -> torch.Tensor:
        """The next free row (a view); call ``commit`` after writing it."""
        if self._filled == self.capacity:
            self.flush()
        return self.rows[self._filled]

    def commit(self, step: int, valid: np.ndarray | None) -> None:
        """Marks the row returned by ``row()`` as written; ``valid`` is a bool mask of width."""
        if self.keep and valid is not None:
            key = np.packbits(valid).tobytes()
            if key not in self._patterns:
                self._patterns[key] = valid.copy()
            self._steps.append(step)
            self._keys.append(key)
            self._filled += 1
        # A rank that keeps nothing reuses row 0 forever.

    def flush(self) -> None:
        """Starts copying the filled rows to the host; never waits for the device."""
        n = self._filled
        if n == 0:
            return
        steps, keys = self._steps, self._keys
        self._filled, self._steps, self._keys = 0, [], []
        if self.device.type != "cuda":
            # Host memory already: hand over a copy of the rows (the buffer is reused).
            self._deliver(self.rows[:n].cpu().numpy().copy(), steps, keys)
            return
        slot = self._next_slot
        self._next_slot = 1 - slot
        self._drain(slot=slot)  # the copy that last used this pinned block is long finished
        if self._pinned[slot] is None:
            self._pinned[slot] = torch.empty(self.capacity, self.width, dtype=torch.float32, pin_memory=True)
        host = self._pinned[slot][:n]
        host.copy_(self.rows[:n], non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append(_Pending(event, host, steps, keys, slot))

    def sync(self) -> None:
        """Everything recorded so far delivered to the host (waits for the device)."""
        self.flush()
        self._drain(slot=None)

    def _drain(self, slot: int | None) -> None:
        keep = []
        for p in self._pending:
            if slot is None or p.slot == slot or p.event.query():
                p.event.synchronize()
                self._deliver(p.host.numpy(), p.steps, p.keys)
            else:
                keep.append(p)
        self._pending = keep

    def _deliver(self, values: np.ndarray, steps: list[int], keys: list[bytes]) -> None:
        mask = np.stack([self._patterns[k] for k in keys])
        self._on_rows(np.asarray(steps, dtype=np.int64), mask, values)


def split_rows(steps: np.ndarray, mask: np.ndarray, values: np.ndarray, lo: int, hi: int) -> list[Chunk]:
    """Compact chunks of the columns [lo, hi): one per pattern of valid columns."""
    if hi <= lo or steps.size == 0:
        return []
    sub = mask[:, lo:hi]
    chunks = []
    keys = np.packbits(sub, axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for u in range(len(uniq)):
        rows = np.flatnonzero(inverse == u)
        cols = np.flatnonzero(sub[rows[0]])
        if cols.size == 0:
            continue
        vals = values[np.ix_(rows, cols + lo)].astype(np.float32, copy=False)
        chunks.append(Chunk(steps[rows], (cols + lo).astype(np.int64), np.ascontiguousarray(vals)))
    return chunks
