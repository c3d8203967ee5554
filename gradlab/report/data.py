"""What every figure needs from a run, computed once: label, colour, grids, series, positions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.analysis.diagnose import LayerMatrix, diagnose_run, layer_matrices, step_series
from gradlab.common import metrics as M
from gradlab.errors import GradlabError
from gradlab.report.align import Alignment, align
from gradlab.report.style import colour

#: Layer metrics the report draws (others stay unread).
REPORT_METRICS = (
    M.GRAD_NORM, M.ACT_GRAD_NORM, M.UPDATE_RATIO, M.ACT_DEAD_UNITS, M.ACT_SATURATED_FRAC,
    M.ACT_STD, M.GRAD_NONFINITE, M.ACT_COS, M.ACT_GRAD_COS_CLASS,
)


@dataclass
class RunView:
    """One run as the figures see it."""

    run: Any
    label: str  # unique among the report's runs (not escaped)
    colour: str
    matrices: dict[str, LayerMatrix]
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    alignment: Alignment
    depth_of: dict[str, int]
    types: dict[str, str]  # layer name -> module type, from the meta (may be empty)
    diagnosis: pd.DataFrame

    @property
    def meta(self) -> dict[str, Any]:
        return self.run.meta if isinstance(self.run.meta, dict) else {}


def unique_labels(names: Sequence[str]) -> list[str]:
    """Run names made unique by a ``#k`` suffix on repeats."""
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name} #{seen[name]}" if counts[name] > 1 else name)
    return out


def _run_name(run: Any) -> str:
    try:
        return str(run.name)
    except Exception:  # a Run-like object without a usable name
        return str(getattr(run, "path", "run"))


def prepare(runs: Sequence[Any]) -> list[RunView]:
    """Build the views (grids, series, alignment and diagnosis) of the runs, in order."""
    if not runs:
        raise GradlabError("no runs to report on: pass at least one run directory")
    labels = unique_labels([_run_name(r) for r in runs])
    views = []
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        for attr in ("meta", "layers", "steps"):
            if not hasattr(run, attr):
                raise GradlabError(f"{label}: not a run (no {attr}); load it with gradlab.store.load_run")
        matrices = layer_matrices(run.layers, REPORT_METRICS)
        depth_of: dict[str, int] = {}
        for m in matrices.values():
            depth_of.update(zip(m.layers, (int(d) for d in m.depths), strict=True))
        types: dict[str, str] = {}
        meta = run.meta if isinstance(run.meta, dict) else {}
        for entry in meta.get("layers") or []:
            if isinstance(entry, dict) and "name" in entry:
                types[str(entry["name"])] = str(entry.get("type") or "")
                if "depth" in entry and str(entry["name"]) not in depth_of:
                    try:
                        depth_of[str(entry["name"])] = int(entry["depth"])
                    except (TypeError, ValueError):
                        pass
        names = list(depth_of)
        alignment = align(names, [depth_of[n] for n in names])
        diagnosis = diagnose_run(run, matrices=matrices)
        if len(diagnosis):
            diagnosis["run"] = label
        views.append(RunView(run, label, colour(i), matrices, step_series(run.steps), alignment,
                             depth_of, types, diagnosis))
    return views
