"""Chaos: a tiny run that flushes every step is killed (SIGKILL) or interrupted (SIGINT) at
random moments, seeded; what is read back is exactly a prefix of an uninterrupted reference
run's rows, in the same order, with no row twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gradlab.store import load_run

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = """\
name = "chaos"
[defaults]
steps = 40
flush_every = 1
eval_every = 5
record_every = 1
batch_size = 16
train_size = 64
eval_size = 32
device = "cpu"
[grid]
model = ["mlp2:width=8"]
"""


def start(out: Path) -> subprocess.Popen:
    spec = out.parent / "chaos.toml"
    if not spec.exists():
        spec.write_text(EXPERIMENT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gradlab", "run", str(spec), "--out", str(out),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def the_run(out: Path) -> Path:
    (meta,) = list(out.glob("*/meta.json"))
    return meta.parent


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("layer", "metric"):
        if column in frame:
            frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def assert_prefix(got: pd.DataFrame, reference: pd.DataFrame, keys: list[str]) -> None:
    got, reference = plain(got), plain(reference)
    assert len(got) <= len(reference)
    assert not got.duplicated(keys).any()
    pd.testing.assert_frame_equal(got, reference.iloc[: len(got)].reset_index(drop=True))


@pytest.mark.slow
def test_killed_and_interrupted_runs_hold_a_prefix_of_the_reference_rows(tmp_path):
    reference_process = start(tmp_path / "reference")
    assert reference_process.wait(timeout=300) == 0, reference_process.stderr.read()
    reference = load_run(the_run(tmp_path / "reference"))
    assert reference.status == "finished" and reference.steps["step"].max() == 39

    rng = random.Random(2026)
    signals = [signal.SIGKILL, signal.SIGINT] * 4
    lengths = []
    for attempt, sig in enumerate(signals):
        out = tmp_path / f"attempt-{attempt}"
        process = start(out)
        deadline = time.monotonic() + 120
        while not list(out.glob("*/meta.json")):  # training has started
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        run = load_run(the_run(out))
        # On failure, say what the run recorded and what the process printed.
        assert run.status in ("stopped", "finished"), (sig, run.meta.get("error"), stderr[-2000:])
        assert_prefix(run.steps, reference.steps, ["step", "metric"])
        assert_prefix(run.layers, reference.layers, ["step", "layer", "metric"])
        done = run.meta.get("steps_done")
        if done is not None:  # meta.json never claims more than the parts hold
            assert done <= run.steps["step"].max() + 1
        lengths.append(len(run.steps))
    # The moments were spread: not every attempt ended at the same place.
    assert len(set(lengths)) > 1, lengths
