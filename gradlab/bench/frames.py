"""The data path at scale: how long ``GradientRecorder.to_frame()`` takes on millions of values.

Run as ``python -m gradlab.bench.overhead --values 10000000 --layers 500`` (the module's own
command line, kept under that name because the published figures cite it).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from gradlab.bench.arms import recorded_values
from gradlab.bench.output import write_json
from gradlab.recorder import GradientRecorder


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def _peak_rss(interval_s: float = 0.002) -> Iterator[dict[str, int]]:
    """Samples resident memory from a thread while the block runs; yields a dict that gets ``peak``."""
    out = {"before": _rss_bytes(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], _rss_bytes())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak"] = max(out["peak"], _rss_bytes())


def frame_scale(values: int = 10_000_000, layers: int = 500, progress: Callable[[str], None] | None = None
                ) -> dict[str, Any]:
    """Record ``values`` values through the public recorder API, then time ``to_frame()``.

    The model is a stack of ``layers`` tiny ``Linear(4, 4)`` layers recorded with the default
    metrics (3 values per layer and 1 per step), so that millions of values take minutes, not
    hours. Reported: recording time, the recorder's host bytes per value, and for
    ``to_frame()`` and ``step_frame()`` the wall time, the frame's size, and the peak resident
    memory above the memory held just before the call (sampled every 2 ms).
    """
    progress = progress or (lambda _m: None)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(layers)])
    x = torch.randn(8, 4)
    rec = GradientRecorder(model)

    def one_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        rec.step()

    one_step()
    per_step = recorded_values(rec)
    steps = max(1, math.ceil(values / per_step))
    t0 = time.perf_counter()
    for i in range(1, steps):
        one_step()
        if i % 1000 == 0:
            progress(f"{i}/{steps} steps recorded ({time.perf_counter() - t0:.0f} s)")
    record_s = time.perf_counter() - t0
    gc.collect()
    host_bytes = int(getattr(rec, "host_bytes", 0))
    t0 = time.perf_counter()
    with _peak_rss() as mem:
        frame = rec.to_frame()
    frame_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _peak_rss() as step_mem:
        steps_frame = rec.step_frame()
    step_s = time.perf_counter() - t0
    n = len(frame) + len(steps_frame)
    shallow = int(frame.memory_usage(deep=False).sum())
    result = {
        "layers": layers, "steps": steps, "values": n, "per_step": per_step,
        "record_s": record_s, "record_ms_per_step": 1e3 * record_s / max(steps - 1, 1),
        "recorder_host_bytes": host_bytes, "host_bytes_per_value": host_bytes / n if n else math.nan,
        "to_frame_s": frame_s, "to_frame_rows": len(frame),
        "frame_bytes_shallow": shallow,
        "rss_before_to_frame": mem["before"], "to_frame_peak_above_before": mem["peak"] - mem["before"],
        "step_frame_s": step_s, "step_frame_rows": len(steps_frame),
        "step_frame_peak_above_before": step_mem["peak"] - step_mem["before"],
    }
    rec.remove()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``python -m gradlab.bench.overhead``: time ``to_frame()`` at scale."""
    parser = argparse.ArgumentParser(prog="python -m gradlab.bench.overhead",
                                     description="Time GradientRecorder.to_frame() on many recorded values.")
    parser.add_argument("--values", type=int, default=10_000_000)
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--json", default=None, help="Also write the figures here.")
    args = parser.parse_args(argv)
    result = frame_scale(args.values, args.layers, progress=lambda m: print(m, file=sys.stderr, flush=True))
    mib = 2**20
    print(f"{result['values']:,} values ({result['layers']} layers x {result['steps']:,} steps), "
          f"recorded in {result['record_s']:.0f} s ({result['record_ms_per_step']:.2f} ms per step)")
    print(f"recorder host memory: {result['recorder_host_bytes'] / mib:.1f} MiB, "
          f"{result['host_bytes_per_value']:.2f} B per value")
    print(f"to_frame(): {result['to_frame_s']:.2f} s, {result['to_frame_rows']:,} rows, frame "
          f"{result['frame_bytes_shallow'] / mib:.0f} MiB (columns, shallow), peak resident memory "
          f"{result['to_frame_peak_above_before'] / mib:.0f} MiB above the "
          f"{result['rss_before_to_frame'] / mib:.0f} MiB before")
    print(f"step_frame(): {result['step_frame_s']:.3f} s, {result['step_frame_rows']:,} rows")
    if args.json:
        write_json(result, args.json)
    return 0
