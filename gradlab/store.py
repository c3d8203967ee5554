"""Run directories: meta.json plus per-layer and per-step tables in Parquet. (being written)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class Run:
    """One stored run: its settings and status (``meta``) and its two long tables."""

    path: Path
    meta: dict[str, Any]
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or Path(self.path).name)

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))
