"""Run store: round trips, incremental atomic parts, killed writers, listings, errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gradlab.errors import GradlabError
from gradlab.store import (
    RunWriter,
    find_finished_run,
    find_runs,
    load_run,
    run_id_for,
    summarize_run,
)

REPO = Path(__file__).resolve().parents[1]
SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1e-300, 1.7976931348623157e308, 0.1]


def layer_frame(steps, layers=("conv1", "layer1.0.conv1", "fc"), metrics=("grad_norm",)):
    rows = [
        (s, name, depth, metric, float(s) + depth / 10 + k / 100)
        for s in steps for depth, name in enumerate(layers) for k, metric in enumerate(metrics)
    ]
    return pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"])


def step_frame(steps, metric="loss"):
    return pd.DataFrame({"step": list(steps), "metric": metric,
                         "value": [2.0 - 0.1 * s for s in steps]})


def bits(values) -> np.ndarray:
    """The exact bit patterns of float64 values (tells 0.0 from -0.0, keeps NaN)."""
    return np.asarray(values, dtype=np.float64).view(np.int64)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------
# round trip and types
# ------------------------------------------------------------------------------------------
def test_round_trip_keeps_values_bit_for_bit_and_types(tmp_path):
    n = len(SPECIAL)
    layers = pd.DataFrame({
        "step": np.arange(n) // 3,
        "layer": [f"layer{i % 3}.0.conv1" for i in range(n)],
        "depth": [i % 3 for i in range(n)],
        "metric": ["grad_norm", "act_std", "update_ratio"] * (n // 3),
        "value": SPECIAL,
    })
    steps = pd.DataFrame({"step": [0, 0, 1], "metric": ["loss", "lr", "loss"],
                          "value": [np.nan, 0.0, -np.inf]})
    with RunWriter(tmp_path / "run", {"name": "r", "spec": {"lr": 0.1}}) as writer:
        writer.append_layers(layers)
        writer.append_steps(steps)
    run = load_run(tmp_path / "run")

    assert dict(run.layers.dtypes.astype(str)) == {
        "step": "int64", "layer": "category", "depth": "int32", "metric": "category",
        "value": "float64",
    }
    assert dict(run.steps.dtypes.astype(str)) == {"step": "int64", "metric": "category",
                                                  "value": "float64"}
    np.testing.assert_array_equal(bits(run.layers["value"]), bits(SPECIAL))
    assert run.layers["layer"].astype(str).tolist() == layers["layer"].tolist()
    assert run.layers["metric"].astype(str).tolist() == layers["metric"].tolist()
    assert run.layers["step"].tolist() == layers["step"].tolist()
    assert run.layers["depth"].tolist() == layers["depth"].tolist()
    np.testing.assert_array_equal(bits(run.steps["value"]), bits(steps["value"]))
    assert run.steps["metric"].astype(str).tolist() == ["loss", "lr", "loss"]
    assert run.status == "finished" and run.name == "r"
    assert run.meta["run_id"] == run_id_for({"lr": 0.1})


def test_parquet_columns_are_dictionary_encoded_and_compressed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with RunWriter(tmp_path / "run", {}) as writer:
        writer.append_layers(layer_frame(range(3)))
    part = tmp_path / "run" / "layers" / "part-00000.parquet"
    schema = pq.read_schema(part)
    assert pa.types.is_dictionary(schema.field("layer").type)
    assert pa.types.is_dictionary(schema.field("metric").type)
    assert schema.field("depth").type == pa.int32()
    column = pq.ParquetFile(part).metadata.row_group(0).column(4)
    assert column.compression == "ZSTD"


def test_empty_run_reads_as_typed_empty_tables(tmp_path):
    RunWriter(tmp_path / "run", {}).close()
    run = load_run(tmp_path / "run")
    assert run.layers.empty and run.steps.empty
    assert list(run.layers.columns) == ["step", "layer", "depth", "metric", "value"]
    assert str(run.layers["depth"].dtype) == "int32"
    assert summarize_run(run)["steps"] == 0


def test_bad_frames_are_refused(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    with pytest.raises(ValueError, match="lacks columns"):
        writer.append_layers(pd.DataFrame({"step": [0], "metric": ["x"], "value": [1.0]}))
    with pytest.raises(ValueError, match="whole numbers"):
        writer.append_steps(pd.DataFrame({"step": [0.5], "metric": ["loss"], "value": [1.0]}))
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.append_steps(step_frame([0]))


# ------------------------------------------------------------------------------------------
# incremental, atomic writing
# ------------------------------------------------------------------------------------------
def test_each_flush_adds_one_part_and_nothing_before_it(tmp_path):
    path = tmp_path / "run"
    writer = RunWriter(path, {"name": "inc"})
    for chunk in ([0, 1], [2, 3], [4]):
        writer.append_layers(layer_frame(chunk))
        writer.append_steps(step_frame(chunk))
        # Buffered rows are not on disk until the flush.
        assert load_run(path).steps["step"].tolist() == list(range(chunk[0]))
        writer.flush()
        assert load_run(path).steps["step"].tolist() == list(range(chunk[-1] + 1))
    writer.close()
    assert sorted(p.name for p in (path / "layers").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    run = load_run(path)
    expected = layer_frame(range(5))
    assert run.layers["step"].tolist() == expected["step"].tolist()
    assert run.layers["value"].tolist() == expected["value"].tolist()


def test_large_appends_are_split_into_parts_of_part_rows(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "run"
    with RunWriter(path, {}, part_rows=4) as writer:
        writer.append_steps(step_frame(range(10)))
        written = sorted((path / "steps").glob("part-*.parquet"))
        assert [pq.read_metadata(p).num_rows for p in written] == [4, 4]
    sizes = [pq.read_metadata(p).num_rows for p in sorted((path / "steps").glob("part-*"))]
    assert sizes == [4, 4, 2]
    assert load_run(path).steps["step"].tolist() == list(range(10))


def test_parts_written_out_of_order_read_sorted_by_step(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {}) as writer:
        writer.append_steps(step_frame([5, 6]))
        writer.flush()
        writer.append_steps(pd.DataFrame({"step": [1, 1], "metric": ["loss", "lr"],
                                          "value": [1.0, 2.0]}))
    run = load_run(path)
    assert run.steps["step"].tolist() == [1, 1, 5, 6]
    assert run.steps["metric"].astype(str).tolist()[:2] == ["loss", "lr"]  # stable


def test_meta_is_written_atomically_and_merged(tmp_path, monkeypatch):
    path = tmp_path / "run"
    writer = RunWriter(path, {"name": "m", "spec": {"a": 1}})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["status"] == "running" and meta["pid"] == os.getpid()
    assert meta["hostname"] == socket.gethostname() and meta["started_at"]
    writer.update_meta(num_steps=10, nonfinite_first={"step": 3, "layer": "fc"})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["num_steps"] == 10 and meta["nonfinite_first"] == {"step": 3, "layer": "fc"}
    assert meta["name"] == "m"

    # A failure half-way through a meta write keeps the previous meta.json and no temp file.
    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(GradlabError, match="disk full"):  # one line, not a traceback
        writer.update_meta(num_steps=99)
    monkeypatch.undo()
    assert json.loads((path / "meta.json").read_text())["num_steps"] == 10
    writer.append_steps(step_frame([0]))
    writer.close()
    leftovers = [p for p in path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    meta = json.loads((path / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["finished_at"] and meta["wall_time_s"] >= 0
    assert meta["error"] is None


def test_meta_is_strict_json_even_with_non_finite_numbers(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {"spec": {"clip": float("inf")}}) as writer:
        writer.update_meta(best=float("nan"), arr=np.arange(2), scalar=np.float32(1.5))
    meta = json.loads((path / "meta.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert meta["best"] is None and meta["arr"] == [0, 1] and meta["scalar"] == 1.5


def test_leftover_temp_part_is_ignored(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {}) as writer:
        writer.append_layers(layer_frame([0]))
    # What a writer killed in the middle of writing a part leaves behind.
    (path / "layers" / ".part-00001.parquet.1a2b3c4d.tmp").write_bytes(b"PAR1\x00\x00half")
    (path / ".meta.json.0f0f0f0f.tmp").write_text('{"status": "runn')
    run = load_run(path)
    assert run.layers["step"].tolist() == [0, 0, 0]
    assert run.status == "finished"


# ------------------------------------------------------------------------------------------
# a writer killed with SIGKILL
# ------------------------------------------------------------------------------------------
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from gradlab.store import RunWriter

    w = RunWriter(sys.argv[1], {"name": "killed", "model": "mlp4", "spec": {"k": 1},
                                "num_steps": 100})
    for s in range(3):
        w.append_layers(pd.DataFrame({"step": [s, s], "layer": ["layers.0", "fc"],
                                      "depth": [0, 1], "metric": "grad_norm",
                                      "value": [0.5 * s, 0.0]}))
        w.append_steps(pd.DataFrame({"step": [s], "metric": ["loss"], "value": [3.0 - s]}))
        w.flush()
    # Recorded but never flushed: must not survive the kill.
    w.append_steps(pd.DataFrame({"step": [3], "metric": ["loss"], "value": [0.1]}))
    print("flushed", flush=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("killed") / "runs" / "mlp4-killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert proc.stdout.readline().strip() == "flushed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return path


def test_killed_writer_leaves_a_readable_stopped_run(killed_run):
    assert json.loads((killed_run / "meta.json").read_text())["status"] == "running"
    run = load_run(killed_run)
    assert run.status == "stopped"
    assert run.meta["status"] == "stopped" and run.meta["recorded_status"] == "running"
    assert run.steps["step"].tolist() == [0, 1, 2]  # up to the last flush, nothing after
    assert run.steps["value"].tolist() == [3.0, 2.0, 1.0]
    assert run.layers["value"].tolist() == [0.0, 0.0, 0.5, 0.0, 1.0, 0.0]
    entries = {e.path.name: e for e in find_runs(killed_run.parent)}
    assert entries["mlp4-killed"].status == "stopped"
    summary = summarize_run(run)
    assert summary["status"] == "stopped" and summary["steps"] == 3
    assert summary["last_loss"] == 1.0 and summary["num_layers"] == 2


def test_a_killed_run_is_replaced_without_overwrite(killed_run, tmp_path):
    import shutil

    copy = tmp_path / "again"
    shutil.copytree(killed_run, copy)
    with RunWriter(copy, {"name": "again"}) as writer:
        writer.append_steps(step_frame([0]))
    run = load_run(copy)
    assert run.status == "finished" and run.steps["step"].tolist() == [0]


# ------------------------------------------------------------------------------------------
# status of runs written elsewhere
# ------------------------------------------------------------------------------------------
def write_meta(path: Path, **meta) -> Path:
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_running_status_depends_on_the_writer_process(tmp_path):
    host = socket.gethostname()
    now = pd.Timestamp.now(tz="UTC").isoformat()
    alive = write_meta(tmp_path / "alive", status="running", pid=os.getppid(), hostname=host,
                       started_at=now)
    gone = write_meta(tmp_path / "gone", status="running", pid=dead_pid(), hostname=host,
                      started_at=now)
    remote = write_meta(tmp_path / "remote", status="running", pid=dead_pid(),
                        hostname=host + "-elsewhere", started_at=now)
    assert load_run(alive).status == "running"
    assert load_run(gone).status == "stopped"
    assert load_run(remote).status == "running"  # cannot check another host's processes


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_reused_pid_does_not_keep_a_run_running(tmp_path):
    # The parent process is alive but began long after this run claims to have started.
    path = write_meta(tmp_path / "old", status="running", pid=os.getppid(),
                      hostname=socket.gethostname(), started_at="2000-01-01T00:00:00+00:00")
    assert load_run(path).status == "stopped"


# ------------------------------------------------------------------------------------------
# context manager, overwrite rules
# ------------------------------------------------------------------------------------------
def test_exception_marks_failed_with_one_line_error_and_keeps_records(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunWriter(path, {}) as writer:
            writer.append_steps(step_frame([0, 1]))
            raise RuntimeError("loss exploded\nat step 1")
    run = load_run(path)
    assert run.status == "failed"
    assert run.meta["error"] == "RuntimeError: loss exploded at step 1"
    assert run.steps["step"].tolist() == [0, 1]


def test_keyboard_interrupt_marks_stopped(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(path, {}) as writer:
            writer.append_steps(step_frame([0]))
            raise KeyboardInterrupt
    run = load_run(path)
    assert run.status == "stopped" and run.meta["error"] == "KeyboardInterrupt"
    assert run.steps["step"].tolist() == [0]


def test_close_is_idempotent_and_checks_status(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    with pytest.raises(ValueError, match="status"):
        writer.close("running")
    writer.close("stopped", error="interrupted")
    writer.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)  # second close: no change
    meta = load_run(tmp_path / "run").meta
    assert meta["status"] == "stopped" and meta["error"] == "interrupted"


def test_finished_run_is_not_overwritten_unless_asked(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {"name": "first"}) as writer:
        writer.append_steps(step_frame([0, 1, 2]))
        writer.flush()
        writer.append_steps(step_frame([3]))
    with pytest.raises(GradlabError) as info:
        RunWriter(path, {"name": "second"})
    assert "finished run" in str(info.value) and "\n" not in str(info.value)
    assert load_run(path).steps["step"].tolist() == [0, 1, 2, 3]
    with RunWriter(path, {"name": "second"}, overwrite=True) as writer:
        writer.append_steps(step_frame([7]))
    run = load_run(path)
    assert run.name == "second" and run.steps["step"].tolist() == [7]
    assert sorted(p.name for p in (path / "steps").iterdir()) == ["part-00000.parquet"]


def test_directory_of_another_live_writer_or_foreign_files_is_refused(tmp_path):
    busy = write_meta(tmp_path / "busy", status="running", pid=os.getppid(),
                      hostname=socket.gethostname(),
                      started_at=pd.Timestamp.now(tz="UTC").isoformat())
    with pytest.raises(GradlabError, match="being written by process"):
        RunWriter(busy, {}, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(GradlabError, match="not a run directory"):
        RunWriter(other, {})
    assert (other / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------
# identity and finding runs
# ------------------------------------------------------------------------------------------
def test_run_id_is_stable_across_key_order_and_changes_with_values():
    a = {"model": "resnet20", "optim": {"lr": 0.1, "momentum": 0.9}, "seed": 0}
    b = {"seed": 0, "optim": {"momentum": 0.9, "lr": 0.1}, "model": "resnet20"}
    assert run_id_for(a) == run_id_for(b)
    assert len(run_id_for(a)) == 12 and int(run_id_for(a), 16) >= 0
    assert run_id_for(a) != run_id_for({**a, "seed": 1})
    assert run_id_for(a) != run_id_for({**a, "optim": {"lr": 0.01, "momentum": 0.9}})
    # Computed in another process: no dependence on hash randomisation.
    out = subprocess.run(
        [sys.executable, "-c",
         f"from gradlab.store import run_id_for; print(run_id_for({b!r}))"],
        capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.strip() == run_id_for(a)


def test_run_id_hashes_the_canonical_json_of_odd_values_as_written_by_hand():
    # Settings may hold numpy scalars, paths, sets, tuples, non-finite floats and non-ASCII
    # text; the id of such a run must not move when the JSON helpers are reorganised.
    spec = {"u": "caf\u00e9", "s": {"z", "y"}, "p": Path("runs/x"), "inf": float("inf"),
            "b": {"y": np.float32(0.5), "x": float("nan")}, "a": (1, np.int64(2))}
    text = '{"a":[1,2],"b":{"x":null,"y":0.5},"inf":null,"p":"runs/x","s":["y","z"],"u":"caf\\u00e9"}'
    assert run_id_for(spec) == hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def test_labels_beyond_int16_codes_and_differing_part_dictionaries_read_back(tmp_path):
    import pyarrow.parquet as pq

    # Two parts with different label dictionaries (overlapping in one label) and more labels
    # in all than int16 codes can number: the reader widens its codes and merges dictionaries.
    first = [f"block{i}" for i in range(20_000)]
    second = [f"block{i}" for i in range(20_000, 33_000)] + ["block5"]
    path = tmp_path / "run"
    with RunWriter(path, {}) as writer:
        for step, names in enumerate((first, second)):
            writer.append_layers(pd.DataFrame({"step": step, "layer": names, "depth": 0,
                                               "metric": "grad_norm", "value": 1.0}))
            writer.flush()
    run = load_run(path)
    parts = sorted((path / "layers").glob("part-*.parquet"))
    assert len(parts) == 2
    reference = pd.concat([pq.read_table(part).to_pandas() for part in parts], ignore_index=True)
    assert run.layers["layer"].astype(str).tolist() == reference["layer"].astype(str).tolist()
    assert run.layers["layer"].astype(str).tolist() == first + second
    assert run.layers["step"].tolist() == [0] * len(first) + [1] * len(second)
    assert run.layers["layer"].nunique() == 33_000


def test_find_finished_run_picks_only_a_finished_run_with_that_id(tmp_path):
    spec = {"model": "mlp4", "seed": 0}
    root = tmp_path / "runs"
    assert find_finished_run(root, run_id_for(spec)) is None  # no root yet
    with pytest.raises(ZeroDivisionError):
        with RunWriter(root / "failed", {"spec": spec}):
            raise ZeroDivisionError("a failure inside the writer")
    assert find_finished_run(root, run_id_for(spec)) is None
    RunWriter(root / "exp" / "done", {"spec": spec}).close()
    RunWriter(root / "exp" / "other", {"spec": {**spec, "seed": 1}}).close()
    assert find_finished_run(root, run_id_for(spec)) == root / "exp" / "done"
    assert find_finished_run(root, run_id_for({"model": "x"})) is None


def test_load_run_errors_name_the_path(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope", "does not exist")
    (tmp_path / "plain").mkdir()
    cases["not a run"] = (tmp_path / "plain", "not a run directory")
    write_meta(tmp_path / "corrupt", status="finished")
    (tmp_path / "corrupt" / "meta.json").write_text('{"status": "fini')
    cases["corrupt meta"] = (tmp_path / "corrupt", "cannot be read")
    write_meta(tmp_path / "list", status="finished")
    (tmp_path / "list" / "meta.json").write_text("[1, 2]")
    cases["meta not an object"] = (tmp_path / "list", "JSON object")
    with RunWriter(tmp_path / "badpart", {}) as writer:
        writer.append_steps(step_frame([0]))
    (tmp_path / "badpart" / "steps" / "part-00001.parquet").write_bytes(b"not parquet")
    cases["corrupt part"] = (tmp_path / "badpart", "part-00001.parquet cannot be read")
    for label, (path, words) in cases.items():
        with pytest.raises(GradlabError) as info:
            load_run(path)
        message = str(info.value)
        assert words in message, label
        assert str(path) in message and "\n" not in message, label


def test_summary_figures_match_the_tables(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {"model": "resnet20", "num_steps": 4,
                          "layers": [{"name": "conv1"}, {"name": "fc"}]}) as writer:
        writer.append_steps(pd.DataFrame({
            "step": [0, 0, 1, 1, 1, 2],
            "metric": ["loss", "train_acc", "loss", "eval_acc", "eval_loss", "loss"],
            "value": [2.3, 0.1, 2.0, 0.25, 2.1, 1.5],
        }))
        writer.update_meta(wall_time_s=12.5)
    summary = summarize_run(load_run(path))
    assert summary["steps"] == 3 and summary["last_step"] == 2 and summary["num_steps"] == 4
    assert summary["last_loss"] == 1.5 and summary["last_eval_acc"] == 0.25
    assert summary["last_train_acc"] == 0.1 and summary["num_layers"] == 2
    assert summary["wall_time_s"] == 12.5  # the caller's figure is kept at close
    assert summary["model"] == "resnet20" and summary["status"] == "finished"


# ------------------------------------------------------------------------------------------
# `gradlab runs`
# ------------------------------------------------------------------------------------------
def test_runs_command_lists_stopped_and_finished_runs(killed_run):
    from gradlab.cli.runs_cmd import runs

    root = killed_run.parent
    if not (root / "resnet20-done").exists():
        with RunWriter(root / "resnet20-done", {"model": "resnet20", "num_steps": 2}) as w:
            w.append_steps(pd.DataFrame({"step": [0, 1, 1], "metric": ["loss", "loss", "eval_acc"],
                                         "value": [2.0, 1.25, 0.5]}))
    result = CliRunner().invoke(runs, [str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["STATUS", "MODEL", "STEPS"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["mlp4"][0] == "stopped" and rows["mlp4"][2] == "3/100"
    assert rows["mlp4"][3] == "1"  # last flushed loss
    assert rows["resnet20"][0] == "finished" and rows["resnet20"][2] == "2/2"
    assert rows["resnet20"][3:5] == ["1.25", "0.5"]

    result = CliRunner().invoke(runs, [str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = {item["model"]: item for item in json.loads(result.output)}
    assert listed["mlp4"]["status"] == "stopped" and listed["mlp4"]["steps"] == 3
    assert listed["resnet20"]["last_eval_acc"] == 0.5


def test_runs_command_errors_and_help(tmp_path):
    from gradlab.cli.runs_cmd import runs

    result = CliRunner().invoke(runs, [str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert str(tmp_path / "missing") in result.output
    help_text = CliRunner().invoke(runs, ["--help"]).output
    assert "gradlab runs" in help_text and "--format" in help_text
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(runs, [str(empty)])
    assert result.exit_code == 0 and "no runs" in result.output


def test_runs_command_lists_a_damaged_run_without_failing(tmp_path):
    from gradlab.cli.runs_cmd import runs

    RunWriter(tmp_path / "good", {"model": "mlp4"}).close()
    write_meta(tmp_path / "bad", status="finished")
    (tmp_path / "bad" / "meta.json").write_text("{")
    result = CliRunner().invoke(runs, [str(tmp_path)])
    assert result.exit_code == 0, result.output
    statuses = sorted(line.split()[0] for line in result.output.splitlines()[1:])
    assert statuses == ["finished", "unreadable"]


# ------------------------------------------------------------------------------------------
# no torch
# ------------------------------------------------------------------------------------------
def test_store_and_runs_command_do_not_import_torch():
    code = ("import sys, gradlab.store, gradlab.cli.runs_cmd; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env())
