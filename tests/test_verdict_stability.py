"""Verdicts do not depend on the thread count or the seed where the effect is real.

Real training, small: plain20 without BN (dL/dh vanishes: a real effect at any seed) and
resnet20 with BN (healthy), each trained at 1 and 2 CPU threads and with 3 seeds. The
gradient-flow verdicts of every metric and phase, and the collapse finding, must be identical
across all of them. (Whether a 12-step run "stalled" is a matter of batch noise, not flow.)
"""

from __future__ import annotations

import pytest

from gradlab.analysis.comparison import summarize
from gradlab.analysis.diagnose import diagnose_run
from gradlab.store import load_run
from gradlab.training.config import TrainConfig
from gradlab.training.loop import train_run

SMALL = dict(train_size=1000, eval_size=200, batch_size=16, steps=12, record_every=4,
             eval_every=12, eval_batches=2, metrics="all", device="cpu")


def _verdicts(tmp_path, model: str, threads: int, seed: int) -> tuple[str, list[str]]:
    outcome = train_run(TrainConfig(model=model, threads=threads, seed=seed, **SMALL), tmp_path, quiet=True)
    assert not outcome.reused and outcome.config.threads == threads
    run = load_run(outcome.path)
    frame = diagnose_run(run)
    late = frame[frame["metric"] == "act_grad_norm"]["verdict"].iloc[-1]
    return late, frame["verdict"].tolist() + [summarize(run).collapsed]


@pytest.mark.slow
@pytest.mark.parametrize("model, expected", [("plain20:norm=none", "vanishing"), ("resnet20", "healthy")])
def test_verdicts_are_the_same_at_one_and_two_threads_and_across_seeds(tmp_path, model, expected):
    results = {(threads, seed): _verdicts(tmp_path, model, threads, seed)
               for threads, seed in [(1, 0), (2, 0), (1, 1), (1, 2)]}
    run_verdicts = {r[0] for r in results.values()}
    assert run_verdicts == {expected}
    per_phase = {tuple(r[1]) for r in results.values()}
    assert len(per_phase) == 1, results
