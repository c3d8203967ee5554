"""The findings of the reliability review, one test each: names used as paths, terminal output,
the one-writer lock, flushes under Ctrl-C, meta.json against its parts, a full disk, odd
meta.json fields, checks before any work, long input in errors, and report temp files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlab.cli import main
from gradlab.errors import GradlabError
from gradlab.store import RunWriter, load_run
from gradlab.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "4", "--batch-size", "16", "--train-size", "64", "--eval-every", "2",
        "--device", "cpu", "--quiet"]
TINY_CONFIG = dict(model="mlp2:width=8", steps=6, batch_size=16, train_size=64, eval_size=32,
                   eval_every=3, flush_every=2, record_every=1, device="cpu")


@pytest.fixture
def default_sigint():
    """Ctrl-C as a plain Python process gets it: KeyboardInterrupt. Other libraries the suite
    loads earlier may leave handlers of their own behind."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_exit_2(result):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# -- names that become paths ---------------------------------------------------------------
def test_safe_slug_by_hand():
    from gradlab.common.names import safe_slug

    assert safe_slug("../../x") == "x"
    assert safe_slug("/etc/passwd") == "etc_passwd"
    assert safe_slug("..") == "run" and safe_slug("") == "run" and safe_slug(".hidden") == "hidden"
    assert safe_slug("a/../b") == "a___b"
    assert safe_slug("plain34 vs resnet34") == "plain34_vs_resnet34"
    assert len(safe_slug("x" * 500)) == 80


@pytest.mark.parametrize("name", ["../../escaped", "/ABSOLUTE/escaped"])
def test_an_experiment_name_cannot_write_outside_the_output_directory(tmp_path, name):
    box = tmp_path / "box"
    (box / "work").mkdir(parents=True)
    if name.startswith("/"):
        name = str(tmp_path / "abs" / "escaped")
    spec = box / "work" / "exp.toml"
    spec.write_text(f'name = {json.dumps(name)}\n[defaults]\nsteps = 2\nbatch_size = 16\n'
                    'train_size = 32\neval_size = 16\ndevice = "cpu"\n[grid]\nmodel = ["mlp2:width=8"]\n')
    victim = tmp_path / "escaped.html"
    victim.write_text("precious")
    before = files_under(tmp_path)
    out = box / "work" / "out"
    cwd = os.getcwd()
    os.chdir(box / "work")  # the default --out is relative: runs/<name>
    try:
        for extra in (["--out", out], []):
            result = invoke("run", spec, "--quiet", *extra)
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    new = files_under(tmp_path) - before
    assert new and all(box / "work" in p.parents for p in new), sorted(map(str, new))
    assert victim.read_text() == "precious"


# -- terminal output -----------------------------------------------------------------------
def test_runs_listing_does_not_print_terminal_escapes(tmp_path):
    writer = RunWriter(tmp_path / "r", {"model": "\x1b]0;owned\x07\x1b[2Jmlp\rX", "spec": {}})
    writer.close()
    result = invoke("runs", tmp_path)
    assert result.exit_code == 0
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", result.output), repr(result.output)
    assert "\\x1b]0;owned\\x07" in result.output  # shown, visibly escaped


def test_error_lines_are_terminal_safe_and_short():
    result = invoke("models", "--spec", "resnet20:" + "a" * 10_000)
    line = assert_one_line_exit_2(result)
    assert len(line) <= 420
    result = invoke("models", "--spec", "\x1b[2Jmlp2:act=\x1b[31m")
    line = assert_one_line_exit_2(result)
    assert "\x1b" not in line


# -- one writer per run directory ----------------------------------------------------------
HOLD = """
import sys, time
from gradlab.store import RunWriter
writer = RunWriter(sys.argv[1], {"spec": {}})
print("holding", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_first_process(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "marker-argument"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "holding"
        # The lock is the operating system's: flock on the run's lock file is taken.
        with open(run / ".lock", "rb") as fh:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(GradlabError) as err:
            RunWriter(run, {"spec": {}}, overwrite=True)
        message = str(err.value)
        assert f"process {holder.pid}" in message and "marker-argument" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone (even killed), the lock is free again.
    RunWriter(run, {"spec": {}}, overwrite=True).close()
    assert load_run(run).status == "finished"


def test_a_run_finished_by_another_process_meanwhile_is_kept(tmp_path, monkeypatch):
    import gradlab.training.loop
    from gradlab.training.loop import train

    config = TrainConfig(**TINY_CONFIG)
    path = train(config, tmp_path, quiet=True)
    finished_at = json.loads((path / "meta.json").read_text())["finished_at"]
    # As if this process looked for a finished run just before the other one finished it.
    # The loop looks it up by its own module-level name: replaced, and the test checks it was used.
    looked = []

    def not_found_yet(root, run_id):
        looked.append(run_id)

    monkeypatch.setattr(gradlab.training.loop, "find_finished_run", not_found_yet)
    assert train(config, tmp_path, quiet=True) == path
    assert looked, "the loop did not look for a finished run through the replaced function"
    assert json.loads((path / "meta.json").read_text())["finished_at"] == finished_at


# -- flushes -------------------------------------------------------------------------------
def test_ctrl_c_during_a_flush_never_duplicates_rows(tmp_path, monkeypatch, default_sigint):
    from gradlab.training.loop import train

    calls = {"n": 0}
    original = RunWriter.flush

    def flush_hit_by_ctrl_c(self, **fields):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the second flush
        return original(self, **fields)

    monkeypatch.setattr(RunWriter, "flush", flush_hit_by_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY_CONFIG), tmp_path, quiet=True)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = load_run(run_dir)
    assert run.status == "stopped"
    assert not run.steps.duplicated(["step", "metric"]).any()
    assert not run.layers.duplicated(["step", "layer", "metric"]).any()
    assert run.steps["step"].max() == 3  # the two flushes of two steps each, once


def test_meta_json_never_claims_more_steps_than_the_parts_hold(tmp_path, monkeypatch):
    import gradlab.store.writer
    from gradlab.training.loop import train

    original = gradlab.store.writer.write_parquet
    writes = {"n": 0}

    def dies_on_the_third_part(table, path):
        writes["n"] += 1
        if writes["n"] == 3:  # the second flush, its steps part: the process "dies" here
            raise RuntimeError("killed")
        original(table, path)

    monkeypatch.setattr(gradlab.store.writer, "write_parquet", dies_on_the_third_part)
    with pytest.raises(RuntimeError, match="killed"):
        train(TrainConfig(**TINY_CONFIG), tmp_path, quiet=True)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "meta.json").read_text())
    run = load_run(run_dir)
    assert meta["steps_done"] <= run.steps["step"].max() + 1
    assert meta["steps_done"] == 2


def test_a_full_disk_is_one_line_and_the_run_stays_readable(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    original = pq.write_table
    writes = {"n": 0}

    def fills_up(table, where, **kwargs):
        writes["n"] += 1
        if writes["n"] > 2:  # the first flush lands, the disk is full for the second
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", fills_up)
    result = invoke("compare", "mlp2:width=8", *TINY, "--eval-every", "1", "--out", tmp_path,
                    "--train-size", "64", "--steps", "30")  # flushes at steps 24 and 29
    line = assert_one_line_exit_2(result)
    assert "No space left on device" in line and "free some space" in line
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = load_run(run_dir)
    assert run.status == "failed" and run.steps["step"].max() == 24


# -- meta.json fields of the wrong type ----------------------------------------------------
def test_one_odd_meta_json_does_not_break_the_listing(tmp_path):
    RunWriter(tmp_path / "good", {"model": "good-model", "spec": {}}).close()
    RunWriter(tmp_path / "odd", {"model": "odd-model", "spec": {}}).close()
    meta_path = tmp_path / "odd" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(status="running", pid=10**30, hostname=socket.gethostname(),
                wall_time_s=1e308 * 10 if False else "soon", started_at=12, num_steps=[1])
    meta_path.write_text(json.dumps(meta))
    result = invoke("runs", tmp_path)
    assert result.exit_code == 0, result.output
    assert "good-model" in result.output and "odd-model" in result.output


# -- checks before any work ----------------------------------------------------------------
def test_an_unwritable_report_path_is_refused_before_training(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = invoke("compare", "mlp2:width=8", *TINY, "--out", tmp_path / "runs",
                    "--report", tmp_path / "a-file" / "report.html")
    assert_one_line_exit_2(result)
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_bench_json_is_refused_before_the_benchmark(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = invoke("bench", "mlp2:width=8", "--device", "cpu", "--repeats", "2", "--warmup", "1",
                    "--json", tmp_path / "a-file" / "bench.json")
    line = assert_one_line_exit_2(result)
    assert "--json" in line


def write_experiment(path: Path, body: str) -> Path:
    path.write_text('name = "t"\n[defaults]\nbatch_size = 16\ntrain_size = 32\neval_size = 16\n'
                    'device = "cpu"\nsteps = 2\n' + body)
    return path


def test_a_bad_value_in_a_later_grid_point_is_refused_before_the_first_trains(tmp_path):
    spec = write_experiment(tmp_path / "e.toml", '[grid]\nmodel = ["mlp2:width=8"]\nlr = [0.1, -1.0]\n')
    result = invoke("run", spec, "--out", tmp_path / "runs", "--quiet")
    assert not (tmp_path / "runs").exists()  # the first point did not train
    line = assert_one_line_exit_2(result)
    assert "lr=-1.0" in line


def test_a_huge_grid_is_counted_not_built_and_the_limit_says_how_to_lift_it(tmp_path):
    from gradlab.training.experiment import load_experiment

    spec = write_experiment(tmp_path / "e.toml",
                            '[grid]\nmodel = ["mlp2:width=8"]\nseed = ' + str(list(range(200)))
                            + "\nlr = " + str([0.1] * 100) + "\n")
    with pytest.raises(GradlabError, match=r"20,000 points.*--max-points 20000"):
        load_experiment(spec)
    assert len(load_experiment(spec, limit=3).configs) == 3


def test_numbers_out_of_range_are_refused():
    for bad in (dict(steps=10**23), dict(lr=-0.1), dict(lr=float("inf")), dict(momentum=2.0),
                dict(seed=-1), dict(seed=2**70), dict(batch_size=10**9), dict(weight_decay=-1.0),
                dict(warmup_steps=10**12), dict(train_size=0), dict(steps=None, epochs=float("nan"))):
        with pytest.raises(GradlabError):
            TrainConfig(model="mlp2", **bad).validate()


def test_a_schedule_factor_cannot_make_the_rate_negative():
    from gradlab.training.optim import lr_factor_fn

    for schedule in ("step:2@-1", "step:2@0", "step:2@nan"):
        with pytest.raises(GradlabError, match="positive"):
            lr_factor_fn(schedule, 10)


def test_steps_and_epochs_resolve_the_same_way_on_the_command_line_and_in_files(tmp_path):
    from gradlab.training.experiment import load_experiment

    result = invoke("compare", "mlp2:width=8", *TINY, "--epochs", "1", "--out", tmp_path)
    assert "not both" in assert_one_line_exit_2(result)
    spec = write_experiment(tmp_path / "both.toml", 'epochs = 1.0\n[grid]\nmodel = ["mlp2"]\n')
    with pytest.raises(GradlabError, match="not both"):
        load_experiment(spec)
    # A later table giving the other length replaces the earlier one, as a flag would.
    spec = write_experiment(tmp_path / "later.toml",
                            '[grid]\nmodel = ["mlp2"]\n[profiles.cpu]\nepochs = 1.0\n')
    (config,) = load_experiment(spec).configs
    assert config.steps is None and config.epochs == 1.0


def test_a_model_too_large_for_memory_is_refused_with_its_size():
    from gradlab.training.preflight import check_run

    with pytest.raises(GradlabError, match=r"resnet20:width=100000 .*needs about [\d,.]+ GB") as err:
        check_run(TrainConfig(model="resnet20:width=100000", device="cpu"))
    # The estimate counts at least the weights, their gradients and SGD's momentum: 3 copies
    # of resnet20's parameters at width 16 scaled by (100000/16)**2 is already ~100 TB.
    gigabytes = float(re.search(r"needs about ([\d,.]+) GB", str(err.value)).group(1).replace(",", ""))
    assert gigabytes > 1e4


def test_the_size_estimate_counts_the_parameters_exactly():
    import torch

    from gradlab.models import build_model
    from gradlab.training.preflight import _model_elements

    for spec in ("resnet20", "mlp3:width=16", "plain20:norm=none"):
        params, activations = _model_elements(spec, 10, (3, 32, 32), 2)
        torch.manual_seed(0)
        real = build_model(spec, num_classes=10, in_channels=3)
        assert params == sum(p.numel() for p in real.parameters())
        assert activations > 0


def test_plotly_hover_labels_show_a_run_name_literally():
    from gradlab.report.style import ptext

    assert "%{" not in ptext("run %{x} %{y:.2f}")
    assert ptext("100% done") == "100% done"


def test_docs_and_messages_name_only_options_that_exist():
    import importlib

    import click

    from gradlab.cli import COMMANDS

    known = {"--help", "--version"}
    for module, attr, _ in COMMANDS.values():
        command = getattr(importlib.import_module(f"gradlab.cli.{module}"), attr)
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    known.add(opt)
    for path in (REPO / "gradlab").rglob("*.py"):  # the `python -m gradlab.X` tools (argparse)
        known.update(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text(encoding="utf-8")))
    others = {"--nproc-per-node", "--nproc_per_node", "--nnodes", "--standalone",  # torchrun
              "--upgrade", "--index-url", "--extra-index-url",  # pip
              "--head",  # ray start
              "--array", "--gres",  # sbatch
              "--strict",  # mkdocs build
              "--durations",  # pytest
              "--update"}  # python tests/test_lint.py: rewrites the lint baselines
    # Modules with their own argparse command line (benchmarks) name their own options and
    # browser switches; every other module's messages and docstrings name gradlab's.
    texts = [p for p in (REPO / "gradlab").rglob("*.py")
             if "argparse" not in p.read_text() and "selenium" not in p.read_text()]
    texts += [REPO / "README.md"]
    texts += sorted((REPO / "docs" / "pages").rglob("*.md"))
    unknown = {}
    for path in texts:
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", path.read_text(encoding="utf-8")):
            if option not in known and option not in others:
                unknown.setdefault(option, path.name)
    for short in re.findall(r"pass -o\b", "".join(p.read_text(encoding="utf-8") for p in texts)):
        unknown.setdefault(short, "a message")
    assert not unknown, unknown


# -- report files --------------------------------------------------------------------------
WRITE_FOREVER = """
import sys
from pathlib import Path
from gradlab.report import _write_atomic
text = "x" * (64 << 20)
print("ready", flush=True)
while True:
    _write_atomic(Path(sys.argv[1]), text)
"""


def test_a_killed_report_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "report.html"
    rng = random.Random(13)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITE_FOREVER, str(target)],
                                  stdout=subprocess.PIPE, text=True, env=env)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    from gradlab.report import _write_atomic

    _write_atomic(target, "final")
    assert target.read_text() == "final"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


@pytest.mark.parametrize("command", [["probe"], ["bench", "--repeats", "2"]])
def test_probe_and_bench_refuse_a_model_too_large_before_building_it(command):
    result = invoke(*command, "resnet20:width=100000", "--device", "cpu")
    line = assert_one_line_exit_2(result)
    assert re.search(r"needs about [\d,.]+ GB", line) and "--batch-size" in line
    assert "--train-size" not in line  # not an option of these commands


def test_a_failed_allocation_is_one_line(monkeypatch):
    import gradlab.models.listing

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(gradlab.models.listing, "models_text", out_of_memory)
    line = assert_one_line_exit_2(invoke("models"))
    assert "out of memory" in line and "--batch-size" in line


def test_ctrl_c_in_the_middle_of_a_step_keeps_whole_steps_only(tmp_path, monkeypatch, default_sigint):
    # Found by the chaos test: rows of the step that Ctrl-C cut short (here during its
    # evaluation) were written without the rest of that step.
    from gradlab.training.loop import _Trainer, train

    config = TrainConfig(**TINY_CONFIG)
    reference = load_run(train(config, tmp_path / "reference", quiet=True))
    calls = {"n": 0}
    original = _Trainer._evaluate

    def interrupted_evaluation(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the evaluation of the last step
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(_Trainer, "_evaluate", interrupted_evaluation)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", quiet=True)
    (run_dir,) = [p for p in (tmp_path / "cut").iterdir() if p.is_dir()]
    cut = load_run(run_dir)
    assert cut.status == "stopped" and cut.meta["steps_done"] == 5
    for table in ("steps", "layers"):
        got, want = getattr(cut, table), getattr(reference, table)
        want = want[want["step"] <= 4].reset_index(drop=True)
        assert_frame_equal_plain(got.reset_index(drop=True), want)


def assert_frame_equal_plain(got, want):
    import pandas as pd

    def plain(frame):
        return frame.assign(**{c: frame[c].astype(str) for c in ("layer", "metric") if c in frame})

    pd.testing.assert_frame_equal(plain(got), plain(want))
