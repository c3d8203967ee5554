"""The metric schema is the one source of metric names: what the recorder and the trainer write,
the store reads back and the report labels is exactly what the schema lists, with the scope it
gives (per layer or per step). The references are the tables a real recorder and a real
training run produce, not the schema itself."""

from __future__ import annotations

import torch
from torch import nn

from gradlab.common import metrics as M
from gradlab.recorder import ALL_METRICS, GradientRecorder
from gradlab.store import load_run
from gradlab.training.config import TrainConfig
from gradlab.training.loop import train


def _one_recorded_step(metrics: str) -> GradientRecorder:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.Sigmoid(),
                          nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = GradientRecorder(model, metrics=metrics)
    x, y = torch.randn(16, 6), torch.arange(16) % 3
    rec.set_labels(y)
    nn.functional.cross_entropy(model(x), y).backward()
    rec.step()
    opt.step()
    opt.zero_grad(set_to_none=True)
    rec.set_labels(y)
    nn.functional.cross_entropy(model(x), y).backward()
    rec.step()  # a second step: update_ratio needs the weights before and after an update
    rec.remove()
    return rec


def test_the_recorder_writes_every_layer_metric_of_the_schema_and_no_other():
    rec = _one_recorded_step("all")
    written = set(rec.to_frame()["metric"].astype(str))
    assert written == set(M.LAYER_METRICS)
    assert set(rec.step_frame()["metric"].astype(str)) == set(M.RECORDER_STEP_METRICS)
    assert all(M.metric(name).scope == "layer" for name in written)


def test_the_default_set_is_what_a_default_recorder_writes():
    rec = _one_recorded_step("default")
    written = set(rec.to_frame()["metric"].astype(str)) | set(rec.step_frame()["metric"].astype(str))
    assert written == set(M.DEFAULT_METRICS)


def test_the_recorder_offers_exactly_the_schema_recorder_metrics():
    assert tuple(ALL_METRICS) == M.RECORDER_METRICS
    assert M.RECORDER_METRICS == tuple(m.name for m in M.SCHEMA
                                       if m.scope == "layer" or m.name in M.RECORDER_STEP_METRICS)


def test_a_training_run_stores_only_schema_metrics_in_the_right_table(tmp_path):
    config = TrainConfig(model="mlp3:width=16", train_size=128, eval_size=32, batch_size=32, steps=3,
                         eval_every=3, flush_every=3, eval_batches=1, device="cpu", metrics="all",
                         clip="norm:1.0")
    run = load_run(train(config, tmp_path, quiet=True))
    step_names = set(run.steps["metric"].astype(str))
    layer_names = set(run.layers["metric"].astype(str))
    assert {n for n in step_names if n not in M.BY_NAME} == set()
    assert {n for n in layer_names if n not in M.BY_NAME} == set()
    assert {M.metric(n).scope for n in step_names} == {"step"}
    assert {M.metric(n).scope for n in layer_names} == {"layer"}
    # every per-step scalar the loop keeps on the device reaches the store
    assert set(M.TRAINER_STEP_METRICS) <= step_names
    assert {M.LR, M.EVAL_LOSS, M.EVAL_ACC} <= step_names


def test_every_metric_has_its_own_label_unit_and_a_legacy_name_maps_into_the_schema():
    labels = [m.label for m in M.SCHEMA]
    assert len(set(labels)) == len(labels)
    assert all(m.unit and m.description for m in M.SCHEMA)
    assert len(M.BY_NAME) == len(M.SCHEMA)
    assert all(new in M.BY_NAME and old not in M.BY_NAME for old, new in M.LEGACY_NAMES.items())
    assert M.label("no_such_metric") == "no_such_metric"
    assert M.in_layout_order(["loss", "act_std", "grad_norm", "zz"]) == ["grad_norm", "act_std", "loss", "zz"]
