"""Build time and size of a report over a large generated run (no training, no torch).

Usage::

    python -m gradlab.bench.report                       # ResNet-152-like, 10,000 steps
    python -m gradlab.bench.report --steps 2000 --runs 2

The generated run has the module names of a ResNet-152 (``layer<S>.<B>.convK``), every layer
metric on its convolutional and linear layers, and the per-step metrics of a clipped run
(loss, accuracy, evaluation, total norm, clipping), so every figure has data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from gradlab.bench.synthetic_metrics import SYNTHETIC_LAYER_METRICS
from gradlab.common import metrics as M
from gradlab.report import build_report, report_from_dirs
from gradlab.store import Run, RunWriter

#: The layer metrics a generated run holds (every one the schema gives a weight layer cheaply).
LAYER_METRICS = SYNTHETIC_LAYER_METRICS


def resnet_like_layers(blocks: Sequence[int] = (3, 8, 36, 3), convs_per_block: int = 3) -> list[dict[str, Any]]:
    """Module table (name, depth, type, num_params) of a ResNet-like net in forward order."""
    table: list[dict[str, Any]] = []

    def add(name: str, kind: str, params: int) -> None:
        table.append({"name": name, "depth": len(table), "type": kind, "num_params": params})

    add("conv1", "Conv2d", 9408)
    add("bn1", "BatchNorm2d", 128)
    add("relu", "ReLU", 0)
    add("maxpool", "MaxPool2d", 0)
    for s, n in enumerate(blocks, start=1):
        for b in range(n):
            for c in range(1, convs_per_block + 1):
                add(f"layer{s}.{b}.conv{c}", "Conv2d", 4096 * s)
                add(f"layer{s}.{b}.bn{c}", "BatchNorm2d", 128 * s)
            if b == 0:
                add(f"layer{s}.{b}.downsample.0", "Conv2d", 8192 * s)
                add(f"layer{s}.{b}.downsample.1", "BatchNorm2d", 256 * s)
            add(f"layer{s}.{b}.relu", "ReLU", 0)
    add("avgpool", "AdaptiveAvgPool2d", 0)
    add("fc", "Linear", 2049000)
    return table


def synthetic_run(*, steps: int = 10_000, blocks: Sequence[int] = (3, 8, 36, 3), decay: float = 0.0,
                  name: str = "resnet152-like", seed: int = 0, clip: float | None = 1.0,
                  nonfinite_at: int | None = None, path: str | os.PathLike[str] = "generated",
                  metrics: Sequence[str] = LAYER_METRICS, every_module: bool = False) -> Run:
    """A :class:`gradlab.store.Run` with plausible values, recorded on every step.

    ``decay`` is the decades lost per weight layer toward the input (0 = flat profile).
    ``nonfinite_at`` makes the first three weight layers' gradients NaN from that step on.
    ``every_module`` records every module of the table (BatchNorm, ReLU, pooling too: 364 for
    ResNet-152), not only the convolutional and linear layers (156).
    """
    rng = np.random.default_rng(seed)
    table = resnet_like_layers(blocks)
    weights = table if every_module else [e for e in table if e["type"] in ("Conv2d", "Linear")]
    # A first non-finite step outside the run is named in the meta but marks no value.
    nonfinite_at_in_run = nonfinite_at if nonfinite_at is not None and 0 <= nonfinite_at < steps else None
    values = _layer_values(rng, len(weights), steps, decay, nonfinite_at_in_run)
    frame = _layer_frame(values, weights, steps, [m for m in metrics if m in values])
    total = np.sqrt((values[M.GRAD_NORM] ** 2).sum(axis=0))
    steps_frame = _step_frame(rng, steps, total, clip, nonfinite_at_in_run)
    meta = {
        "name": name, "model": name, "status": "finished", "num_steps": steps,
        "spec": {"model": name, "steps": steps, "clip": f"norm:{clip}" if clip else "none", "lr": 0.1,
                 "seed": seed},
        "layers": table, "seed": seed,
        "nonfinite_first": ({"step": nonfinite_at, "layer": weights[0]["name"]}
                            if nonfinite_at is not None else None),
    }
    return Run(path=Path(path), meta=meta, layers=frame, steps=steps_frame)


def _layer_values(rng: np.random.Generator, n_layers: int, steps: int, decay: float,
                  nonfinite_at: int | None) -> dict[str, np.ndarray]:
    """(layers, steps) arrays of every synthetic layer metric."""
    pos = np.arange(n_layers)
    t = np.arange(steps)
    # log10 norm: a profile across depth, a slow drift over time, noise, and a few spikes.
    profile = -decay * (n_layers - 1 - pos) - 2.0
    drift = -0.5 * np.log10(1 + t / max(steps / 10, 1))
    spikes = np.zeros(steps)
    spikes[rng.choice(steps, size=max(1, steps // 500), replace=False)] = 1.5
    base = profile[:, None] + drift[None, :] + spikes[None, :]
    values: dict[str, np.ndarray] = {
        M.GRAD_NORM: 10 ** (base + rng.normal(0, 0.15, base.shape)),
        M.ACT_GRAD_NORM: 10 ** (base - 1 + rng.normal(0, 0.1, base.shape)),
        M.WEIGHT_NORM: np.broadcast_to(np.linspace(5, 20, n_layers)[:, None], base.shape).copy(),
        M.UPDATE_RATIO: 10 ** (-3 + 0.3 * drift[None, :] + rng.normal(0, 0.2, base.shape)),
        M.ACT_MEAN: rng.normal(0.3, 0.05, base.shape),
        M.ACT_STD: np.abs(rng.normal(1.0, 0.1, base.shape)) * (1 + 0.01 * pos[:, None]),
        M.ACT_ZERO_FRAC: np.clip(rng.normal(0.3, 0.05, base.shape), 0, 1),
        M.ACT_SATURATED_FRAC: np.zeros(base.shape),
        M.GRAD_NONFINITE: np.zeros(base.shape),
    }
    if nonfinite_at is not None:
        values[M.GRAD_NORM][:3, nonfinite_at:] = np.nan
        values[M.ACT_GRAD_NORM][:3, nonfinite_at:] = np.inf
        values[M.GRAD_NONFINITE][:3, nonfinite_at:] = 1.0
    return values


def _layer_frame(values: dict[str, np.ndarray], weights: list[dict[str, Any]], steps: int,
                 metric_list: list[str]) -> pd.DataFrame:
    """The long layer table (step, layer, depth, metric, value) of ``metric_list``."""
    n_layers = len(weights)
    depth = np.array([e["depth"] for e in weights])
    t = np.arange(steps)
    cells = n_layers * steps
    layer_codes = np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), 1), steps)
    return pd.DataFrame({
        "step": np.tile(np.repeat(t, n_layers), len(metric_list)).astype(np.int64),
        "layer": pd.Categorical.from_codes(np.tile(layer_codes, len(metric_list)),
                                           categories=[e["name"] for e in weights]),
        "depth": np.tile(np.tile(depth, steps), len(metric_list)).astype(np.int32),
        "metric": pd.Categorical.from_codes(np.repeat(np.arange(len(metric_list), dtype=np.int32), cells),
                                            categories=metric_list),
        "value": np.concatenate([values[m].T.ravel() for m in metric_list]),
    })


def _step_frame(rng: np.random.Generator, steps: int, total: np.ndarray, clip: float | None,
                nonfinite_at: int | None) -> pd.DataFrame:
    """The per-step table of a clipped run: loss, accuracy, evaluation, total norm, clipping."""
    t = np.arange(steps)
    step_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {
        M.LOSS: (t, 2.3 * np.exp(-t / max(steps / 3, 1)) + 0.1 + rng.normal(0, 0.05, steps)),
        M.TRAIN_ACC: (t, np.clip(0.1 + 0.8 * (1 - np.exp(-t / max(steps / 3, 1))) + rng.normal(0, 0.03, steps),
                                 0, 1)),
        M.LR: (t, np.full(steps, 0.1)),
        M.TOTAL_GRAD_NORM: (t, np.minimum(total, clip) if clip else total),
    }
    every = max(1, steps // 20)
    ev = np.arange(every - 1, steps, every)
    step_rows[M.EVAL_LOSS] = (ev, 2.3 * np.exp(-ev / max(steps / 3, 1)) + 0.2)
    step_rows[M.EVAL_ACC] = (ev, 0.1 + 0.7 * (1 - np.exp(-ev / max(steps / 3, 1))))
    if clip:
        fired = (total > clip).astype(float)
        step_rows.update({
            M.CLIP_THRESHOLD: (t, np.full(steps, clip)),
            M.CLIP_FIRED: (t, fired),
            M.CLIP_NORM_BEFORE: (t, total),
            M.CLIP_NORM_AFTER: (t, np.minimum(total, clip)),
        })
    if nonfinite_at is not None:
        step_rows[M.NONFINITE] = (np.array([nonfinite_at]), np.array([1.0]))
    steps_frame = pd.concat(
        [pd.DataFrame({"step": s.astype(np.int64), "metric": m, "value": v.astype(float)})
         for m, (s, v) in step_rows.items()], ignore_index=True,
    ).sort_values("step", kind="stable", ignore_index=True)
    steps_frame["metric"] = steps_frame["metric"].astype("category")
    return steps_frame


def store_runs(generated: Sequence[Any], root: str | os.PathLike[str]) -> list[Path]:
    """Write generated runs as run directories with the store's writer (as training would)."""
    dirs = []
    for run in generated:
        path = Path(root) / str(run.meta["name"])
        with RunWriter(path, dict(run.meta), overwrite=True) as writer:
            writer.append_layers(run.layers)
            writer.append_steps(run.steps)
        dirs.append(path)
    return dirs


def bench(steps: int = 10_000, runs: int = 1, out: str | None = None, plotlyjs: str = "embed",
          store: str | None = None, every_module: bool = False) -> dict[str, Any]:
    """Generate ``runs`` ResNet-152-like runs, build one report, return timings and sizes.

    With ``store`` the runs are first written as run directories there, and the build time
    includes reading them back (what ``gradlab report`` does).
    """
    t0 = time.perf_counter()
    generated = [synthetic_run(steps=steps, name=f"resnet152-like-{i}", seed=i, decay=0.02 * i,
                               every_module=every_module) for i in range(runs)]
    dirs = store_runs(generated, store) if store else []
    t1 = time.perf_counter()
    target = Path(out) if out else Path(tempfile.mkdtemp()) / "bench.html"
    if dirs:
        del generated[1:]  # keep one for the counts below; the report reads the directories
        report_from_dirs(dirs, target, plotlyjs=plotlyjs)
    else:
        build_report(generated, target, plotlyjs=plotlyjs)
    t2 = time.perf_counter()
    size = target.stat().st_size
    js = len(get_plotlyjs().encode()) if plotlyjs == "embed" else 0
    return {
        "runs": runs, "steps": steps, "layers": int(generated[0].layers["layer"].nunique()),
        "rows": int(len(generated[0].layers)) * runs, "generate_s": round(t1 - t0, 2),
        "build_s": round(t2 - t1, 2), "html_mb": round(size / 1e6, 2),
        "html_without_plotlyjs_mb": round((size - js) / 1e6, 2), "path": str(target),
    }


def browser_seconds(path: str | os.PathLike[str], chromium: str = "/usr/bin/chromium",
                    chromedriver: str = "/usr/bin/chromedriver", timeout: float = 120.0) -> float:
    """Seconds from opening the report in headless Chromium until every figure is drawn."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    script = ("const d = document.querySelectorAll('.plotly-graph-div'); return d.length > 0 && "
              "Array.from(d).every(e => e.querySelector('svg.main-svg, canvas') !== null);")
    try:
        start = time.perf_counter()
        driver.get(Path(path).resolve().as_uri())  # returns after the load event
        while not driver.execute_script(script):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"figures not drawn after {timeout} s")
            time.sleep(0.05)
        return time.perf_counter() - start
    finally:
        driver.quit()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradlab.bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", default=None, help="where to write the report (default: a temp dir)")
    parser.add_argument("--plotlyjs", choices=("embed", "beside"), default="embed")
    parser.add_argument("--store", default=None,
                        help="write the runs as run directories here first and build from them")
    parser.add_argument("--browser", action="store_true",
                        help="also time opening the report in headless Chromium (needs selenium)")
    parser.add_argument("--every-module", action="store_true",
                        help="record every module (364 for ResNet-152), not only the 156 weight layers")
    args = parser.parse_args(argv)
    result = bench(args.steps, args.runs, args.out, args.plotlyjs, args.store, args.every_module)
    if args.browser:
        result["browser_draw_s"] = round(browser_seconds(result["path"]), 2)
    for key, value in result.items():
        print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
