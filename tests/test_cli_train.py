"""The training commands as a user runs them: compare, probe, run; bad input; a killed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradlab.cli import main
from gradlab.store import load_run

TINY = ["--steps", "4", "--batch-size", "32", "--train-size", "128", "--eval-every", "2", "--device", "cpu",
        "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_compare_trains_both_and_writes_a_report(tmp_path):
    result = invoke("compare", "mlp3:width=16,norm=none", "mlp6:width=16,norm=none", *TINY, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = Path(result.output.strip().splitlines()[-1].removeprefix("report: "))
    html = report.read_text()
    assert "mlp3:width=16,norm=none" in html and "mlp6:width=16,norm=none" in html
    runs = [Path(line.removeprefix("run: ")) for line in result.output.splitlines() if line.startswith("run: ")]
    assert [load_run(r).status for r in runs] == ["finished", "finished"]
    # same settings again: the finished runs are reused, not retrained
    before = [json.loads((r / "meta.json").read_text())["started_at"] for r in runs]
    again = invoke("compare", "mlp3:width=16,norm=none", "mlp6:width=16,norm=none", *TINY, "--out", tmp_path)
    assert again.exit_code == 0
    assert [load_run(r).meta["started_at"] for r in runs] == before
    # --rerun trains again
    invoke("compare", "mlp3:width=16,norm=none", *TINY, "--out", tmp_path, "--rerun")
    assert load_run(runs[0]).meta["started_at"] != before[0]


def test_probe_shows_vanishing_in_a_deep_plain_net_and_not_in_its_residual_twin():
    result = invoke("probe", "plain56:norm=none", "resnet56", "--device", "cpu", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    plain, residual = result.output.split("== resnet56")
    assert "VANISHING" in plain
    assert "underflow" in plain  # the first layers' gradients are exactly 0.0 in float32
    assert "VANISHING" not in residual and "HEALTHY" in residual


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "resnet9000", "--out", "{tmp}"], "resnet"),
        (["compare", "mlp3", "--steps", "-1", "--out", "{tmp}"], "steps"),
        (["compare", "mlp3", "--clip", "bogus", "--out", "{tmp}"], "clip"),
        (["compare", "mlp3", "--data", "cifar10", "--out", "{tmp}"], "--data-dir"),
        (["compare", "mlp3", "--out", "/proc/gradlab-cannot-write"], "writable"),
        (["probe", "plain56:norm=sometimes"], "norm"),
        (["run", "{tmp}/missing.toml"], "not found"),
        (["report", "{tmp}/no-such-run", "-o", "{tmp}/r.html"], "no-such-run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path / "out")) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("Error:"), result.output
    assert message in error_lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_experiment_file_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\nlearning_rate = 0.1\n[grid]\nmodel = ["mlp3"]\n')
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "learning_rate" in result.output and "lr" in result.output


@pytest.mark.slow
def test_experiment_grid_runs_every_point(tmp_path):
    spec = tmp_path / "exp.toml"
    spec.write_text(
        'name = "tiny"\n[defaults]\nsteps = 2\nbatch_size = 16\ntrain_size = 64\neval_size = 32\n'
        'device = "cpu"\n[grid]\nmodel = ["mlp2:width=8", "mlp3:width=8"]\nlr = [0.1, 0.01]\n'
        "[profiles.cpu]\n[profiles.full]\nsteps = 64000\n"
    )
    result = invoke("run", spec, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    runs = [load_run(Path(line[5:])) for line in result.output.splitlines() if line.startswith("run: ")]
    assert sorted((r.meta["spec"]["model"], r.meta["spec"]["lr"]) for r in runs) == [
        ("mlp2:width=8", 0.01), ("mlp2:width=8", 0.1), ("mlp3:width=8", 0.01), ("mlp3:width=8", 0.1)]
    assert (tmp_path / "runs" / "tiny.html").exists()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_reported_as_stopped(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "gradlab", "compare", "mlp3:width=16", "--steps", "100000", "--batch-size",
           "16", "--train-size", "64", "--device", "cpu", "--quiet", "--out", str(out), "--eval-every", "1000",
           "--record-every", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            parts = list(out.glob("*/layers/part-*.parquet"))
            if len(parts) >= 2:
                break
            time.sleep(0.2)
        assert len(parts) >= 2, "the run wrote no records in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = next(out.iterdir())
    run = load_run(run_dir)
    assert run.status == "stopped"
    assert run.layers["step"].max() >= 2 * 25 - 1  # at least two flushes of 25 steps
    listing = invoke("runs", out)
    assert "stopped" in listing.output
    report = invoke("report", run_dir, "-o", tmp_path / "killed.html")
    assert report.exit_code == 0, report.output
    assert (tmp_path / "killed.html").stat().st_size > 0


@pytest.mark.slow
def test_torchrun_ddp_records_equal_a_single_process_run(tmp_path):
    """Two gloo processes, each half of every batch: rank 0's records equal one process on the
    full batch (a model without BatchNorm, so per-rank batch statistics play no part)."""
    common = ["compare", "mlp3:width=16,norm=none", "--steps", "3", "--batch-size", "32", "--train-size", "128",
              "--device", "cpu", "--quiet", "--eval-every", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "gradlab", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
         "-m", "gradlab", *common, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    [one_dir] = (tmp_path / "one").glob("mlp*")
    [two_dir] = (tmp_path / "two").glob("mlp*")
    one, two = load_run(one_dir), load_run(two_dir)
    assert two.meta["world_size"] == 2
    key = ["step", "layer", "metric"]
    a = one.layers.query("metric == 'grad_norm'").sort_values(key).reset_index(drop=True)
    b = two.layers.query("metric == 'grad_norm'").sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert (a["value"] - b["value"]).abs().max() <= 1e-5 * a["value"].abs().max()
    # one report only, written by rank 0
    assert len(list((tmp_path / "two").glob("*.html"))) == 1
