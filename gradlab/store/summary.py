"""Key figures of stored runs, and the text table or JSON that ``gradlab runs`` prints."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.common import metrics as M
from gradlab.common.jsonsafe import dumps
from gradlab.errors import GradlabError, terminal_safe
from gradlab.store.layout import META_FILE
from gradlab.store.listing import RunEntry, find_runs
from gradlab.store.meta import one_line
from gradlab.store.run import Run

#: The keys of a summary, in the order listings show them.
SUMMARY_KEYS = ("name", "path", "run_id", "model", "status", "steps", "num_steps", "last_step",
                "last_loss", "last_eval_acc", "last_train_acc", "num_layers", "wall_time_s",
                "started_at", "error")


def _last_value(steps: pd.DataFrame, metric: str) -> float | None:
    """Value of ``metric`` at its highest recorded step (NaN kept: a diverged loss shows)."""
    if steps.empty:
        return None
    rows = steps.loc[steps["metric"] == metric, "value"]
    if rows.empty:
        return None
    return float(rows.iloc[-1])


def _num_layers(run: Run) -> int | None:
    """The layer count: from meta's layer table where recorded, else from the layer rows."""
    layer_table = run.meta.get("layers")
    if isinstance(layer_table, list):
        return len(layer_table)
    if not run.layers.empty:
        return int(run.layers["layer"].nunique())
    return None


def summarize_run(run: Run) -> dict[str, Any]:
    """Key figures of one run, for listings.

    Keys: name, path, run_id, model, status, steps (distinct steps recorded), num_steps
    (planned, from meta), last_step, last_loss, last_eval_acc, last_train_acc, num_layers,
    wall_time_s, started_at, error. Missing figures are ``None``; floats may be NaN.
    """
    meta = run.meta
    frame = run.steps if not run.steps.empty else run.layers
    wall = meta.get("wall_time_s")
    return {
        "name": run.name,
        "path": str(run.path),
        "run_id": meta.get("run_id"),
        "model": meta.get("model"),
        "status": run.status,
        "steps": int(frame["step"].nunique()) if not frame.empty else 0,
        "num_steps": meta.get("num_steps"),
        "last_step": int(frame["step"].iloc[-1]) if not frame.empty else None,
        "last_loss": _last_value(run.steps, M.LOSS),
        "last_eval_acc": _last_value(run.steps, M.EVAL_ACC),
        "last_train_acc": _last_value(run.steps, M.TRAIN_ACC),
        "num_layers": _num_layers(run),
        "wall_time_s": float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
        "started_at": meta.get("started_at"),
        "error": meta.get("error"),
    }


def _unreadable_summary(entry: RunEntry) -> dict[str, Any]:
    """The summary of a run that could not be read: what its meta still says, and why."""
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    summary.update(name=entry.name, path=str(entry.path), run_id=entry.run_id,
                   model=entry.meta.get("model"), status="unreadable",
                   num_steps=entry.meta.get("num_steps"), started_at=entry.meta.get("started_at"),
                   error=entry.error)
    return summary


def summarize_runs(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """:func:`summarize_run` for every run under ``root`` (per-layer tables are not read).

    Raises :class:`GradlabError` when ``root`` does not exist. A run that cannot be read is
    summarised with status ``unreadable`` and the reason in ``error``.
    """
    root = Path(root)
    if not root.exists():
        raise GradlabError(f"{root} does not exist; pass the directory that holds your runs "
                           "(training writes them under runs/ by default)")
    if not root.is_dir():
        raise GradlabError(f"{root} is not a directory; pass the directory that holds your runs")
    summaries = []
    for entry in find_runs(root):
        if entry.error is None:
            try:
                summaries.append(summarize_run(entry.load(layers=False)))
                continue
            except GradlabError as exc:
                entry = RunEntry(path=entry.path, meta=entry.meta, error=str(exc))
            except Exception as exc:  # a field of the wrong type: that run alone is unreadable
                entry = RunEntry(path=entry.path, meta=entry.meta,
                                 error=f"{entry.path / META_FILE} holds a value of the wrong type "
                                       f"({one_line(exc)}); train the run again or delete it")
        summaries.append(_unreadable_summary(entry))
    return summaries


def _fmt_float(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _fmt_wall(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def _table_row(s: dict[str, Any], root: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """One summary as the cells of a listing row, each safe to print on a terminal."""
    steps = "-" if s["steps"] is None else str(s["steps"])
    if s.get("num_steps") is not None and s["steps"] is not None:
        steps = f"{s['steps']}/{s['num_steps']}"
    path = s["path"]
    if root is not None:
        try:
            path = str(Path(path).relative_to(root)) if Path(path) != Path(root) else "."
        except ValueError:
            pass
    row = (
        s["status"], str(s.get("model") or s["name"]), steps, _fmt_float(s["last_loss"]),
        _fmt_float(s["last_eval_acc"], 3), _fmt_wall(s["wall_time_s"]), path,
    )
    # Every cell may come from a meta.json someone else wrote: never print raw escapes.
    return tuple(terminal_safe(str(cell)) for cell in row)


def format_runs(summaries: list[dict[str, Any]], fmt: str = "table",
                root: str | os.PathLike[str] | None = None) -> str:
    """Render run summaries as an aligned text table or as JSON (NaN and inf become null)."""
    if fmt == "json":
        return dumps(summaries, indent=2)
    if fmt != "table":
        raise GradlabError(f"unknown format {fmt!r}; use table or json")
    if not summaries:
        where = f" under {root}" if root is not None else ""
        return f"no runs{where}"
    header = ("STATUS", "MODEL", "STEPS", "LOSS", "EVAL ACC", "WALL", "PATH")
    rows = [_table_row(s, root) for s in summaries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
