"""Scale check of the run store: write and read N per-layer records, with time, size and memory.

Run as ``python -m gradlab.bench.store 10000000``. The records look like a training run's:
150 layers x 9 metrics per recorded step, appended and flushed every 25 steps as the trainer
does by default (``--steps-per-flush``), or handed over as one frame (``--one-frame``).
The write and the read each run in a fresh child process, so that each phase's peak resident
memory (``ru_maxrss``) is its own; the figure printed next to it is the same child's memory
just after its imports, before any record exists.

This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab.bench.synthetic_metrics import SYNTHETIC_LAYER_METRICS
from gradlab.store import RunWriter, load_run

LAYERS = 150
#: The metrics of every layer and step, as a fully recorded weight layer has them.
METRICS = SYNTHETIC_LAYER_METRICS


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _rss_now_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def make_frame(first_step: int, steps: int, seed: int = 0) -> pd.DataFrame:
    """Per-layer records of ``steps`` recorded steps starting at ``first_step``."""
    per_step = LAYERS * len(METRICS)
    n = steps * per_step
    rng = np.random.default_rng(seed + first_step)
    layer_codes = np.tile(np.repeat(np.arange(LAYERS, dtype=np.int16), len(METRICS)), steps)
    metric_codes = np.tile(np.arange(len(METRICS), dtype=np.int8), LAYERS * steps)
    # float32-born values, as a recorder on the device produces them, with a few specials.
    values = rng.lognormal(-3.0, 2.0, n).astype(np.float32).astype(np.float64)
    values[::997] = 0.0
    values[::100_003] = np.nan
    values[::1_000_003] = np.inf
    names = [f"layer{i // 50 + 1}.{i % 50}.conv" for i in range(LAYERS)]
    return pd.DataFrame(copy=False, data={
        "step": np.repeat(np.arange(first_step, first_step + steps, dtype=np.int64), per_step),
        "layer": pd.Categorical.from_codes(layer_codes, categories=names),
        "depth": layer_codes.astype(np.int32),
        "metric": pd.Categorical.from_codes(metric_codes, categories=list(METRICS)),
        "value": values,
    })


def _write_phase(path: Path, rows: int, steps_per_flush: int, one_frame: bool) -> dict[str, Any]:
    base = _rss_now_mib()
    per_step = LAYERS * len(METRICS)
    total_steps = -(-rows // per_step)
    chunk_steps = total_steps if one_frame else steps_per_flush
    start = time.perf_counter()
    written = 0
    frame_rss = 0.0
    generating = 0.0  # making the synthetic records is not the store's time
    with RunWriter(path, {"name": "store-bench", "spec": {"rows": rows}}) as writer:
        for first in range(0, total_steps, chunk_steps):
            made = time.perf_counter()
            frame = make_frame(first, min(chunk_steps, total_steps - first))
            generating += time.perf_counter() - made
            if written + len(frame) > rows:
                frame = frame.iloc[: rows - written]
            frame_rss = max(frame_rss, _rss_now_mib())
            writer.append_layers(frame)
            written += len(frame)
            del frame
            writer.flush()
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (path / "layers").glob("part-*.parquet"))
    parts = len(list((path / "layers").glob("part-*.parquet")))
    return {"rows": written, "seconds": round(seconds - generating, 2),
            "generating_seconds": round(generating, 2), "bytes": size, "parts": parts,
            "rss_after_import_mib": round(base, 1),
            "rss_with_input_frame_mib": round(frame_rss, 1),
            "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _read_phase(path: Path) -> dict[str, Any]:
    base = _rss_now_mib()
    start = time.perf_counter()
    run = load_run(path)
    seconds = time.perf_counter() - start
    frame_mib = run.layers.memory_usage(deep=True).sum() / 2**20
    return {"rows": len(run.layers), "seconds": round(seconds, 2),
            "frame_mib": round(frame_mib, 1), "rss_after_import_mib": round(base, 1),
            "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "gradlab.bench.store", *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_store(rows: int, *, steps_per_flush: int = 25, one_frame: bool = False,
                directory: str | Path | None = None) -> dict[str, Any]:
    """Write then read ``rows`` per-layer records; returns times, sizes and peak memory."""
    tmp = Path(tempfile.mkdtemp(prefix="gradlab-store-bench-", dir=directory))
    try:
        run = tmp / "run"
        flags = ["--one-frame"] if one_frame else []
        write = _child(["--phase", "write", "--path", str(run), str(rows),
                        "--steps-per-flush", str(steps_per_flush), *flags])
        read = _child(["--phase", "read", "--path", str(run), str(rows)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rows": rows,
        "layout": "one frame" if one_frame else f"flush every {steps_per_flush} steps",
        "write": write,
        "read": read,
        "bytes_per_row": round(write["bytes"] / max(rows, 1), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradlab.bench.store",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="?", default=10_000_000)
    parser.add_argument("--steps-per-flush", type=int, default=25)
    parser.add_argument("--one-frame", action="store_true",
                        help="append all records as one frame instead of per flush")
    parser.add_argument("--phase", choices=["write", "read"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "write":
        print(json.dumps(_write_phase(Path(args.path), args.rows, args.steps_per_flush,
                                      args.one_frame)))
        return
    if args.phase == "read":
        print(json.dumps(_read_phase(Path(args.path))))
        return
    result = bench_store(args.rows, steps_per_flush=args.steps_per_flush,
                         one_frame=args.one_frame)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
