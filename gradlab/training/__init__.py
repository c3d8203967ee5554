"""Training and orchestration: the loop, its parts and what runs it.

The parts of a run (:mod:`config`, :mod:`data`, :mod:`optim`, :mod:`clipping`,
:mod:`distributed`), the loop that records one (:mod:`loop`, with :mod:`steplog` for its
flushes, :mod:`identity` for run ids and folders, :mod:`prediction` for the mean-field line),
and what drives loops: :mod:`compare` (``gradlab compare``), :mod:`experiment` (grids from
TOML), :mod:`launch` (shards and Ray), :mod:`probe` (one batch, no training) and
:mod:`preflight` (checks before any work). This layer may import every layer below it; nothing
below imports it.
"""
