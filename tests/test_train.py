"""The training loop end to end on tiny runs: store contents, repeatability, non-finite steps, AMP."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from gradlab.errors import GradlabError
from gradlab.store import load_run
from gradlab.training.config import TrainConfig
from gradlab.training.loop import run_dir_for, train

TINY = dict(train_size=256, eval_size=64, batch_size=32, steps=6, eval_every=3, flush_every=2,
            eval_batches=2, device="cpu", record_every=1)


#: An MLP without normalisation at a rate that overflows its loss within a few SGD steps.
EXPLODING = ("mlp3:width=32,norm=none",)
EXPLODING_KW = dict(optimizer="sgd", lr=1e6, momentum=0.0, weight_decay=0.0)


def tiny(model="mlp3:width=32", **kw):
    return TrainConfig(model=model, **{**TINY, **kw})


def test_run_store_holds_every_step_and_layer(tmp_path):
    path = train(tiny(), tmp_path, quiet=True)
    run = load_run(path)
    assert run.status == "finished"
    assert run.meta["spec"]["model"] == "mlp3:width=32"
    assert run.meta["versions"]["torch"] == torch.__version__
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    assert list(steps.index) == list(range(6))
    assert np.isfinite(steps["loss"]).all()
    assert steps["eval_acc"].dropna().index.tolist() == [2, 5]
    # the total norm the clipper saw equals the recorder's total norm (both before clipping)
    np.testing.assert_allclose(steps["clip_norm_before"], steps["total_grad_norm"], rtol=1e-5)
    grad = run.layers[run.layers.metric == "grad_norm"]
    assert set(grad.step) == set(range(6))
    layer_names = {entry["name"] for entry in run.meta["layers"]}
    assert set(grad.layer) <= layer_names


def test_total_norm_matches_a_hand_rerun_of_the_first_step(tmp_path):
    """Rebuild model and first batch by hand; the stored step-0 norm must match autograd's."""
    from gradlab.models import build_model
    from gradlab.training.data import load_data
    from gradlab.training.distributed import GlobalBatchSampler

    config = tiny()
    run = load_run(train(config, tmp_path, quiet=True))
    data = load_data("synthetic", seed=0, train_size=256, eval_size=64)
    torch.manual_seed(0)
    model = build_model(config.model, num_classes=data.num_classes, in_channels=data.input_size[0])
    idx = next(iter(GlobalBatchSampler(256, 32, seed=0)))
    x = torch.stack([data.train[i][0] for i in idx])
    y = torch.tensor([int(data.train[i][1]) for i in idx])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])
    )
    stored = run.steps.query("step == 0 and metric == 'total_grad_norm'")["value"].item()
    assert stored == pytest.approx(float(expected), rel=1e-5)


def test_cpu_runs_repeat_exactly(tmp_path):
    a = load_run(train(tiny(), tmp_path / "a", quiet=True))
    b = load_run(train(tiny(), tmp_path / "b", quiet=True))
    pd.testing.assert_frame_equal(a.layers, b.layers)
    pd.testing.assert_frame_equal(a.steps, b.steps)


def test_finished_run_is_reused_unless_rerun(tmp_path):
    first = train(tiny(), tmp_path, quiet=True)
    stamp = load_run(first).meta["started_at"]
    assert train(tiny(), tmp_path, quiet=True) == first
    assert load_run(first).meta["started_at"] == stamp
    train(tiny(), tmp_path, quiet=True, rerun=True)
    assert load_run(first).meta["started_at"] != stamp


def test_nonfinite_step_stops_cleanly_with_data_saved(tmp_path):
    # lr so large that the loss overflows within a few steps
    path = train(tiny(*EXPLODING, **EXPLODING_KW, steps=30, metrics="default"), tmp_path,
                 quiet=True)
    run = load_run(path)
    assert run.status == "failed"
    assert "non-finite" in run.meta["error"]
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    last = steps.index.max()
    assert last < 29
    assert steps.loc[last, "nonfinite"] == 1.0
    assert (steps.loc[: last - 1, "nonfinite"] == 0.0).all()
    assert run.meta["nonfinite_first"] is not None


def test_nonfinite_step_between_recorded_steps_is_still_located(tmp_path):
    config = tiny(*EXPLODING, **EXPLODING_KW, steps=30, metrics="default", record_every=1000)
    run = load_run(train(config, tmp_path, quiet=True))
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    first = int(steps.index[steps["nonfinite"] == 1.0][0])
    assert first > 0  # step 0 is the only recorded one, and it was finite
    # the recorder checks every step's norms on the device: step and layer, though not recorded
    found = run.meta["nonfinite_first"]
    assert found["step"] == first and found["metric"] == "grad_norm"
    assert found["layer"] in {r["name"] for r in run.meta["layers"]}


@pytest.mark.parametrize("mode, amp", [("stop", "none"), ("skip", "none"), ("stop", "fp16")])
def test_first_nonfinite_step_is_exact_under_stop_skip_and_fp16(tmp_path, mode, amp):
    # fp16: the GradScaler skips the overflowing steps itself (from its first, at scale 65536)
    config = tiny(optimizer="sgd", lr=1e12, momentum=0.0, weight_decay=0.0, steps=12, metrics="default",
                  record_every=4, on_nonfinite=mode, amp=amp)
    run = load_run(train(config, tmp_path, quiet=True))
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    first = int(steps.index[steps["nonfinite"] == 1.0][0])
    found = run.meta["nonfinite_first"]
    assert found["step"] == first and found["layer"] is not None


def test_nonfinite_steps_can_be_skipped(tmp_path):
    config = tiny(*EXPLODING, **EXPLODING_KW, steps=12, on_nonfinite="skip", metrics="default")
    run = load_run(train(config, tmp_path, quiet=True))
    assert run.status == "finished"
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    assert len(steps) == 12
    assert steps["nonfinite"].sum() >= 1
    assert steps["skipped"].fillna(0).sum() == steps["nonfinite"].sum()


def test_a_skipped_first_step_keeps_the_schedule_without_a_warning(tmp_path):
    config = tiny(model="mlp3:width=32,norm=none,init=normal:1e30", steps=3, on_nonfinite="skip",
                  metrics="default")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(train(config, tmp_path, quiet=True))
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    assert steps.loc[0, "nonfinite"] == 1.0  # the premise: step 0 was skipped
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]


def test_clipping_is_recorded(tmp_path):
    run = load_run(train(tiny(clip="norm:0.01"), tmp_path, quiet=True))
    steps = run.steps.pivot_table(index="step", columns="metric", values="value")
    np.testing.assert_allclose(steps["clip_threshold"], 0.01)
    assert (steps["clip_fired"] == 1.0).all()
    np.testing.assert_allclose(steps["clip_norm_after"], 0.01, rtol=1e-4)


def test_bf16_autocast_runs_and_records(tmp_path):
    run = load_run(train(tiny(amp="bf16"), tmp_path, quiet=True))
    assert run.status == "finished"
    assert np.isfinite(run.layers.query("metric == 'grad_norm'")["value"]).all()


def test_epochs_set_the_number_of_steps(tmp_path):
    config = dataclasses.replace(tiny(), steps=None, epochs=0.5)
    run = load_run(train(config, tmp_path, quiet=True))
    assert run.meta["num_steps"] == 4  # 0.5 * 256 / 32


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(steps=-1), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(amp="fp8"), "amp"),
        (dict(model="resnet9000"), "resnet"),
        (dict(clip="norm:x"), "norm"),
        (dict(batch_size=512), "fewer than a batch"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, change, match):
    config = dataclasses.replace(tiny(), **change)
    with pytest.raises(GradlabError, match=match):
        train(config, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_directory_name_is_model_and_settings_hash(tmp_path):
    a, b = run_dir_for(tiny(), tmp_path), run_dir_for(tiny(lr=0.05), tmp_path)
    assert a.name.startswith("mlp3_width=32-") and a != b


def test_the_recorded_command_names_gradlab_not_where_it_is_installed():
    from gradlab.training.loop import command_line

    assert command_line(["/opt/env/bin/gradlab", "run", "experiments/x.toml"]) == "gradlab run experiments/x.toml"
    assert command_line(["/src/repo/gradlab/__main__.py", "compare", "plain20"]) == "gradlab compare plain20"
    assert command_line(["train.py", "--name", "two words"]) == "train.py --name 'two words'"
    assert command_line([]) == ""
