"""The report's non-finite panel agrees with the run's meta (``nonfinite_first``)."""

from __future__ import annotations

import numpy as np

from gradlab.bench.report import synthetic_run
from gradlab.report.data import prepare
from gradlab.report.nonfinite import nonfinite_section


def _stopped_between_records(step: int = 3):
    """A run that stopped on a non-finite step that was not one of its recorded steps."""
    run = synthetic_run(steps=12, blocks=(1, 1), name="stopped", clip=None)
    recorded = run.layers["step"] % 4 == 0  # record_every 4: steps 0, 4, 8
    run.layers = run.layers[recorded & (run.layers["step"] < step)].reset_index(drop=True)
    run.steps = run.steps[run.steps["step"] <= step].reset_index(drop=True)
    run.meta["nonfinite_first"] = {"step": step, "layer": None}
    return run


def test_meta_step_between_records_is_not_called_finite():
    run = _stopped_between_records()
    assert np.isfinite(run.layers["value"]).all()  # nothing non-finite reached the tables
    notes = " ".join(nonfinite_section(prepare([run])).notes)
    assert "first non-finite value at step 3" in notes
    assert "No non-finite value was recorded" not in notes
    assert "layer is not located" in notes


def test_clean_run_still_says_nothing_was_recorded():
    run = synthetic_run(steps=12, blocks=(1, 1), name="clean", clip=None)
    run.meta.pop("nonfinite_first", None)
    notes = " ".join(nonfinite_section(prepare([run])).notes)
    assert "No non-finite value was recorded in the run." in notes
    assert "first non-finite" not in notes
