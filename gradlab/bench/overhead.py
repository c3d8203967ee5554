"""What recording costs: the bare training step against the same step with the recorder attached.

``run_bench(BenchConfig("resnet20"))`` times one copy of the model per arm (the bare step, an
A/A control, the recorder with each metric set and schedule asked for, and the two common
alternatives), interleaved in one process; ``format_bench`` prints the result and
``write_json`` keeps it. The parts live in their own modules:

- :mod:`gradlab.bench.config`: what to time (:class:`BenchConfig`) and what was measured;
- :mod:`gradlab.bench.harness`: the arms and the interleaved timing loop (:func:`run_bench`);
- :mod:`gradlab.bench.arms`: one arm, device syncs, dynamo's counters;
- :mod:`gradlab.bench.alternatives`: the ``.item()`` loop and the wandb-like histograms;
- :mod:`gradlab.bench.stats`: quantiles, spreads and a round's figure;
- :mod:`gradlab.bench.memory`: what a recorder holds (:func:`held_bytes`);
- :mod:`gradlab.bench.environment`: the versions and machine of a measurement;
- :mod:`gradlab.bench.output`: the text table and the JSON file;
- :mod:`gradlab.bench.frames`: ``to_frame()`` on millions of values.

``python -m gradlab.bench.overhead --values N --layers L`` runs the last of these.

This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

from gradlab.bench.alternatives import HIST_BINS, histc_loop, item_norm_loop
from gradlab.bench.arms import own_classes as _own_classes
from gradlab.bench.arms import recorded_values
from gradlab.bench.config import (
    AMP_MODES,
    BARE,
    CONTROL,
    HISTC,
    ITEM_LOOP,
    METRIC_SETS,
    RECORDER,
    ArmResult,
    BenchConfig,
    BenchResult,
    steps_per_round,
)
from gradlab.bench.config import check_config as _check
from gradlab.bench.environment import environment
from gradlab.bench.frames import frame_scale
from gradlab.bench.frames import main as _frame_main
from gradlab.bench.harness import Bench as _Bench
from gradlab.bench.harness import run_bench
from gradlab.bench.memory import held_bytes
from gradlab.bench.output import format_bench, write_json, write_text
from gradlab.bench.stats import Spread, quantile, round_statistic

__all__ = [
    "AMP_MODES", "BARE", "CONTROL", "HISTC", "HIST_BINS", "ITEM_LOOP", "METRIC_SETS", "RECORDER",
    "ArmResult", "BenchConfig", "BenchResult", "Spread", "_Bench", "_check", "_frame_main",
    "_own_classes", "environment", "format_bench", "frame_scale", "held_bytes", "histc_loop",
    "item_norm_loop", "quantile", "recorded_values", "round_statistic", "run_bench",
    "steps_per_round", "write_json", "write_text",
]

if __name__ == "__main__":
    raise SystemExit(_frame_main())
