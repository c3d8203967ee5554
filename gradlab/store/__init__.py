"""Run directories: ``meta.json`` plus per-layer and per-step tables in Parquet parts.

Layout of one run directory (documented in the docs so that other tools can read it)::

    <run>/meta.json                      settings, status, timings (JSON object)
    <run>/layers/part-00000.parquet      step int64, layer dict<string>, depth int32,
    <run>/layers/part-00001.parquet ...  metric dict<string>, value float64
    <run>/steps/part-00000.parquet ...   step int64, metric dict<string>, value float64

Every file is written to a temporary name in the same directory, synced and then renamed over
its final name, so a process killed at any moment leaves each file either complete or absent
(a leftover ``.*.tmp`` file is ignored by readers). A run that was killed keeps every part it
flushed and its ``meta.json`` still says ``running``; readers on the same host see that the
writer's process is gone and report the run as ``stopped``.

The package is split by concept: :mod:`~gradlab.store.layout` (names and schemas),
:mod:`~gradlab.store.identity` (run ids), :mod:`~gradlab.store.files` (atomic writes),
:mod:`~gradlab.store.lock`, :mod:`~gradlab.store.liveness` (is the writer alive?),
:mod:`~gradlab.store.writer`, :mod:`~gradlab.store.meta`, :mod:`~gradlab.store.tables`
(reading a table), :mod:`~gradlab.store.run`, :mod:`~gradlab.store.listing`,
:mod:`~gradlab.store.summary` and :mod:`~gradlab.store.legacy`. Everything public is
re-exported here.

This package must stay free of torch: reports and ``gradlab runs`` read runs without it.
"""

from __future__ import annotations

from gradlab.store.identity import run_id_for
from gradlab.store.interrupts import interrupts_deferred
from gradlab.store.layout import (
    DEFAULT_PART_ROWS,
    LOCK_FILE,
    META_FILE,
    SCHEMAS,
    STATUSES,
    STORE_FORMAT,
    TABLES,
    empty_frame,
)
from gradlab.store.listing import RunEntry, find_finished_run, find_runs
from gradlab.store.liveness import effective_status
from gradlab.store.lock import RunLock
from gradlab.store.meta import read_meta, update_run_meta
from gradlab.store.run import Run, load_run
from gradlab.store.summary import format_runs, summarize_run, summarize_runs
from gradlab.store.writer import RunFinishedError, RunWriter

__all__ = [
    "DEFAULT_PART_ROWS",
    "LOCK_FILE",
    "META_FILE",
    "SCHEMAS",
    "STATUSES",
    "STORE_FORMAT",
    "TABLES",
    "Run",
    "RunEntry",
    "RunFinishedError",
    "RunLock",
    "RunWriter",
    "effective_status",
    "empty_frame",
    "find_finished_run",
    "find_runs",
    "format_runs",
    "interrupts_deferred",
    "load_run",
    "read_meta",
    "run_id_for",
    "summarize_run",
    "summarize_runs",
    "update_run_meta",
]
