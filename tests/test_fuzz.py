"""Fuzzing the inputs a user or a file controls: model specs, numbers on the command line,
experiment files and meta.json. Every input ends in success or in exit status 2 with one line
on stderr, never a traceback.

Sized for CI: a fixed number of examples per property, derandomized (the same examples on
every run), no training (the training function is replaced by a marker once every check has
passed, which counts as success).
"""

from __future__ import annotations

import json
import math
import socket
import string

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlab.cli import main

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class ReachedTraining(Exception):
    """Raised in place of training: every check before it passed."""


@pytest.fixture
def no_training(monkeypatch):
    import gradlab.training.compare
    import gradlab.training.experiment
    import gradlab.training.loop

    def reached(*args, **kwargs):
        raise ReachedTraining

    # Each command reaches the loop through its own module-level name: replace every one.
    monkeypatch.setattr(gradlab.training.loop, "train", reached)
    for module in (gradlab.training.loop, gradlab.training.compare, gradlab.training.experiment):
        monkeypatch.setattr(module, "train_run", reached)


def check_outcome(result, *, success_codes=(0,)):
    """Success, the training marker, or exit 2 with exactly one 'Error:' line."""
    if isinstance(result.exception, ReachedTraining):
        return "trained"
    if result.exit_code in success_codes and result.exception is None:
        return "ok"
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert len(lines[0]) <= 420 and "\x1b" not in lines[0]
    assert lines[0].startswith("Error: ") or "Usage:" in result.output
    return "refused"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- model specs ---------------------------------------------------------------------------
SPEC_WORDS = ["resnet20", "resnet56", "plain20", "mlp3", "mlp30", "resnet18", "tv:resnet18",
              "act=", "norm=", "none", "bn", "relu", "sigmoid", "tanh", "width=", "init=",
              "shortcut=", "stem=", "size=", "zero_init_residual=", "kaiming_normal_fan_in",
              ":", ",", "=", "0", "1", "-1", "8", "1e9", "nan", " ", "\x1b[2J", "%{x}", "é", ".."]
specs = st.lists(st.sampled_from(SPEC_WORDS), min_size=1, max_size=8).map("".join) | st.text(
    alphabet=string.ascii_letters + string.digits + ":,=._- ", max_size=40)


@FUZZ
@given(spec=specs)
def test_model_specs_are_described_or_refused_in_one_line(spec):
    result = invoke("models", "--spec", spec, "--format", "json")
    if result.exit_code == 2 and "Usage:" in result.output:
        return  # click refused the argument itself (an empty option value, say)
    check_outcome(result)


# -- numbers on the command line -----------------------------------------------------------
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e23", "nan", "inf", "-0", "0x10", "", "1_000", "٣"]),
)
NUMBER_OPTIONS = ["--steps", "--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay",
                  "--warmup-steps", "--seed", "--eval-every", "--eval-batches", "--flush-every",
                  "--record-every", "--train-size"]


@FUZZ
@given(option=st.sampled_from(NUMBER_OPTIONS), value=numbers,
       schedule=st.sampled_from(["constant", "cosine", "step:2@-1", "step:1,2@0.5", "step:0"]))
def test_numbers_on_the_command_line_are_accepted_or_refused_in_one_line(no_training, tmp_path,
                                                                        option, value, schedule):
    result = invoke("compare", "mlp2:width=8", "--device", "cpu", "--train-size", "64",
                    "--batch-size", "16", "--schedule", schedule, option, value, "--out", tmp_path,
                    "--quiet")
    if result.exit_code == 2 and "Usage:" in result.output:
        return  # not a number at all: click's own usage error, exit 2
    check_outcome(result)


# -- experiment files ----------------------------------------------------------------------
FIELDS = ["model", "steps", "epochs", "batch_size", "lr", "momentum", "seed", "schedule", "clip",
          "device", "data", "train_size", "eval_size", "amp", "metrics", "warmup_steps",
          "flush_every", "extra", "bogus"]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, width=64),
    st.booleans(),
    st.sampled_from(["mlp2:width=8", "resnet20", "cpu", "synthetic", "norm:1", "cosine", "x"]),
    st.text(max_size=12),
)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are valid in TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


tables = st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=5)
grids = st.dictionaries(st.sampled_from(FIELDS), st.lists(scalars, max_size=3), max_size=3)


@FUZZ
@given(name=st.text(max_size=20), defaults=tables, grid=grids, profile=tables,
       garbage=st.sampled_from(["", "[defaults", "x = ", "[[grid]]\n", "\x00"]))
def test_experiment_files_run_or_are_refused_in_one_line(no_training, tmp_path, name, defaults,
                                                         grid, profile, garbage):
    lines = [f"name = {toml_value(name)}", "[defaults]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    lines += ["[grid]"] + [f"{k} = {toml_value(v)}" for k, v in grid.items()]
    lines += ["[profiles.cpu]"] + [f"{k} = {toml_value(v)}" for k, v in profile.items()]
    spec = tmp_path / "fuzz.toml"
    spec.write_text("\n".join(lines) + "\n" + garbage, encoding="utf-8")
    result = invoke("run", spec, "--out", tmp_path / "runs", "--quiet")
    check_outcome(result)


# -- meta.json -----------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False) | st.text(max_size=10)
    # values that steer a reader into its "is the writer alive?" path
    | st.sampled_from(["running", socket.gethostname(), 10**30, -1, 1, "\x1b[2J"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
META_KEYS = ["status", "pid", "hostname", "started_at", "finished_at", "wall_time_s", "num_steps",
             "model", "name", "run_id", "layers", "spec", "error", "meanfield", "data",
             "nonfinite_first", "store_format"]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    import pandas as pd

    from gradlab.store import RunWriter

    root = tmp_path_factory.mktemp("stored")
    with RunWriter(root / "run", {"model": "mlp2", "spec": {"model": "mlp2"}, "num_steps": 3}) as w:
        w.append_steps(pd.DataFrame({"step": [0, 1, 2], "metric": ["loss"] * 3, "value": [2.0, 1.5, 1.0]}))
        w.append_layers(pd.DataFrame({"step": [0, 0], "layer": ["fc1", "fc2"], "depth": [0, 1],
                                      "metric": ["grad_norm"] * 2, "value": [0.5, 0.25]}))
    return root / "run"


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(META_KEYS), json_values, min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(META_KEYS), max_size=2), as_text=st.sampled_from([None, "", "[]", "{", "1"]))
def test_meta_json_mutations_list_or_are_refused_in_one_line(tmp_path, stored_run, changes, drop, as_text):
    import shutil

    run = tmp_path / "runs" / "run"
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    shutil.copytree(stored_run, run)
    meta = json.loads((run / "meta.json").read_text())
    meta.update(changes)
    for key in drop:
        meta.pop(key, None)
    text = json.dumps(meta) if as_text is None else as_text
    (run / "meta.json").write_text(text)
    for fmt in ("table", "json"):
        check_outcome(invoke("runs", tmp_path / "runs", "--format", fmt))


@settings(max_examples=12, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(META_KEYS), json_values, min_size=1, max_size=3))
def test_meta_json_mutations_report_or_are_refused_in_one_line(tmp_path, stored_run, changes):
    import shutil

    run = tmp_path / "runs" / "run"
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    shutil.copytree(stored_run, run)
    meta = json.loads((run / "meta.json").read_text())
    meta.update(changes)
    (run / "meta.json").write_text(json.dumps(meta))
    check_outcome(invoke("report", run, "-o", tmp_path / "r.html"))
