"""The mean-field prediction stored with a run, checked against the recorder, and drawn in reports."""

import numpy as np
import torch

from gradlab.training.probe import probe, write_probe_report


def test_probe_stores_a_prediction_that_matches_the_recorded_profile(tmp_path):
    plain, residual = probe(["plain20:norm=none", "resnet20"], batch_size=64, device="cpu")
    assert residual.meta["meanfield"] is None  # BN and shortcuts: the theory does not apply
    predicted = {p["layer"]: p["pred_rel"] for p in plain.meta["meanfield"]}
    measured = plain.layers.query("metric == 'act_grad_norm' and step == 0").set_index("layer")["value"]
    layers = [name for name in predicted if name in measured.index]
    assert len(layers) == 20
    depth = np.arange(len(layers))
    slope_pred = np.polyfit(depth, np.log10([predicted[n] for n in layers]), 1)[0]
    slope_meas = np.polyfit(depth, np.log10([measured[n] for n in layers]), 1)[0]
    # the recorder's dL/dh falls about 0.4 decades per layer, as mean-field theory predicts
    assert slope_meas > 0.3
    assert abs(slope_pred - slope_meas) < 0.04

    html = write_probe_report([plain, residual], tmp_path / "probe.html").read_text()
    assert "plain20:norm=none: mean-field" in html
    assert "resnet20: mean-field" not in html


def test_overlay_meets_the_measurement_at_the_last_layer():
    from gradlab.report.profiles import _Line, meanfield_line

    class View:
        meta = {"meanfield": [{"layer": "a", "pred_rel": 0.01}, {"layer": "b", "pred_rel": 0.1},
                              {"layer": "c", "pred_rel": 1.0}]}

    line = _Line(View(), "act_grad_norm", "init", np.array([0.0, 1.0, 2.0]), np.array([3e-3, 4e-2, 0.5]),
                 ["a", "b", "c"], [0, 1, 2], "step 0")
    x, y = meanfield_line(line)
    np.testing.assert_allclose(x, [0, 1, 2])
    np.testing.assert_allclose(y, [0.005, 0.05, 0.5])


def test_a_reused_run_without_a_stored_prediction_gets_the_one_its_own_training_stored(tmp_path):
    import json

    from gradlab.training.config import TrainConfig
    from gradlab.training.loop import train

    config = TrainConfig(model="plain20:norm=none", data="synthetic", train_size=64, eval_size=32,
                         batch_size=16, steps=2, device="cpu", eval_every=2, eval_batches=1)
    run_dir = train(config, tmp_path, quiet=True)
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    stored = meta.pop("meanfield")
    assert len(stored) == 20
    meta_path.write_text(json.dumps(meta))  # as an older gradlab wrote it
    parts = sorted(p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet"))

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    assert train(config, tmp_path, quiet=True) == run_dir  # reused, not trained again
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is untouched
    refilled = json.loads(meta_path.read_text())["meanfield"]
    assert [r["layer"] for r in refilled] == [r["layer"] for r in stored]
    np.testing.assert_allclose([r["pred_rel"] for r in refilled], [r["pred_rel"] for r in stored],
                               rtol=1e-12)
    assert sorted(p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")) == parts
