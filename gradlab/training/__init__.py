"""Training and orchestration: the loop, its parts and what runs it.

- The parts of a run: :mod:`config`, :mod:`data`, :mod:`optim`, :mod:`clipping`,
  :mod:`distributed`, :mod:`device`.
- The loop that records one: :mod:`loop`, with :mod:`identity` (run ids, output folders,
  device-sized defaults), :mod:`steplog` (the rows kept between flushes), :mod:`prediction`
  (the mean-field line stored with a run) and :mod:`progress`.
- What drives loops: :mod:`compare` (``gradlab compare``), :mod:`experiment` (grids from TOML),
  :mod:`launch` (shards and Ray), :mod:`probe` (one batch, no training) and :mod:`preflight`
  (checks before any work).

This layer may import every layer below it; nothing below imports it.
"""
