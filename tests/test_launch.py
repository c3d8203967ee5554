"""Grids beyond one process: --shard K/N, the grid's state in the store, and Ray. Every way
of running a grid must give the serial run's run ids and the same recorded rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gradlab.cli import main
from gradlab.errors import GradlabError
from gradlab.store import RunWriter, load_run

GRID = """\
name = "grid"
[defaults]
steps = 6
batch_size = 16
train_size = 48
eval_size = 16
eval_every = 3
record_every = 2
flush_every = 4
device = "cpu"
threads = 1  # the thread count is part of a CPU run's identity: the same here and in Ray tasks
[grid]
model = ["mlp2:width=8", "mlp3:width=8"]
lr = [0.1, 0.02]
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def rows_by_run_id(out: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    found = {}
    for meta in sorted(out.glob("*/meta.json")):
        run = load_run(meta.parent)
        assert run.status == "finished"
        found[run.run_id] = tuple(
            frame.assign(**{c: frame[c].astype(str) for c in ("layer", "metric") if c in frame})
            for frame in (run.steps, run.layers))
    return found


def assert_same_runs(got: dict, reference: dict) -> None:
    assert sorted(got) == sorted(reference) and len(reference) == 4
    for run_id, (steps, layers) in reference.items():
        pd.testing.assert_frame_equal(got[run_id][0], steps)
        pd.testing.assert_frame_equal(got[run_id][1], layers)


def test_parse_shard():
    from gradlab.training.launch import parse_shard

    assert parse_shard("2/8") == (2, 8) and parse_shard(" 1 / 1 ") == (1, 1) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "1/0", "a/b", "1-2", "", "1/2/3"):
        with pytest.raises(GradlabError, match="--shard"):
            parse_shard(bad)


def test_shards_split_the_grid_into_disjoint_parts_that_cover_it():
    from gradlab.training.launch import shard_points

    points = list(range(11))
    for n in (1, 2, 3, 11, 12):
        parts = [shard_points(points, (k, n)) for k in range(1, n + 1)]
        assert sorted(p for part in parts for p in part) == points
        assert parts == [[p for p in points if p % n == k] for k in range(n)]  # round robin, by hand


def test_shards_give_the_serial_runs_and_the_report_is_built_from_the_store(tmp_path, grid_file):
    from gradlab.training.experiment import run_experiment

    run_experiment(grid_file, out=tmp_path / "serial", quiet=True)
    serial = rows_by_run_id(tmp_path / "serial")
    for k in (1, 2):
        report, run_dirs = run_experiment(grid_file, out=tmp_path / "sharded", quiet=True, shard=(k, 2))
        assert report is None and len(run_dirs) == 2
    assert_same_runs(rows_by_run_id(tmp_path / "sharded"), serial)
    result = CliRunner().invoke(main, ["run", str(grid_file), "--out", str(tmp_path / "sharded"),
                                       "--report-only"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "sharded" / "grid.html").read_text()
    assert "mlp2:width=8" in html and "mlp3:width=8" in html


def test_runs_shows_each_grid_point_done_running_failed_or_missing(tmp_path, grid_file):
    from gradlab.training.experiment import load_experiment, run_experiment
    from gradlab.training.loop import run_id

    out = tmp_path / "runs"
    run_experiment(grid_file, out=out, quiet=True, shard=(1, 2))  # points 0 and 2
    configs = load_experiment(grid_file).configs
    failed = RunWriter(out / "failed-point", {"spec": configs[1].to_dict(), "run_id": run_id(configs[1])})
    failed.close("failed", error="boom")
    running = RunWriter(out / "running-point", {"spec": configs[3].to_dict(), "run_id": run_id(configs[3])})
    try:
        result = CliRunner().invoke(main, ["runs", str(out), "--experiment", str(grid_file)])
    finally:
        running.close()
    assert result.exit_code == 0, result.output
    states = [line.split()[0] for line in result.output.splitlines()[1:5]]
    assert states == ["done", "failed", "done", "running"]
    assert "2 done, 1 running, 1 failed, 0 missing of 4 points" in result.output
    result = CliRunner().invoke(main, ["run", str(grid_file), "--out", str(tmp_path / "empty"),
                                       "--report-only"])
    assert result.exit_code == 2 and "4 of 4 grid points have no finished run" in result.output


def test_without_ray_the_launcher_says_how_to_install_it(tmp_path, grid_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    result = CliRunner().invoke(main, ["run", str(grid_file), "--out", str(tmp_path / "o"),
                                       "--launcher", "ray"])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: --launcher ray needs Ray, which is not installed: "
                                     "pip install 'gradlab[ray]'")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_grid_through_a_local_ray_instance_gives_the_serial_runs(tmp_path, grid_file):
    pytest.importorskip("ray")  # the optional extra: gradlab[ray]
    from gradlab.training.experiment import run_experiment

    run_experiment(grid_file, out=tmp_path / "serial", quiet=True)
    serial = rows_by_run_id(tmp_path / "serial")
    messages = []
    report, run_dirs = run_experiment(grid_file, out=tmp_path / "ray", quiet=True, launcher="ray",
                                      workers=2, progress=messages.append)
    assert report is not None and report.is_file() and len(run_dirs) == 4
    assert_same_runs(rows_by_run_id(tmp_path / "ray"), serial)
    assert any("4/4 points finished" in m for m in messages)
    # Again: every point has a finished run, so nothing is submitted.
    messages.clear()
    run_experiment(grid_file, out=tmp_path / "ray", quiet=True, launcher="ray", workers=2,
                   progress=messages.append)
    assert not any("submitted" in m for m in messages)


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_the_trainer_and_the_recorder_agree_on_which_rank_writes(rank, monkeypatch):
    from gradlab.recorder.dist import Ranks
    from gradlab.training.distributed import DistInfo, is_main_process

    monkeypatch.setenv("RANK", str(rank))
    expected = rank == 0  # torchrun's rank 0 is the one process that writes
    assert DistInfo(rank=rank, world_size=4).is_main is expected
    assert Ranks(rank=rank, world_size=4).keeps_records is expected
    assert is_main_process() is expected  # read from the environment, after the group is gone
