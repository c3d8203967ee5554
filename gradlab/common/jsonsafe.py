"""The one way gradlab turns settings, meta and figures into strict JSON.

JSON has no NaN or infinity: a non-finite float becomes ``null``, so ``meta.json`` and
benchmark results parse in any reader (Python's ``json`` would otherwise write ``NaN``).
Values JSON lacks (numpy scalars and arrays, paths, sets, dates) get a plain form.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN and infinity replaced by ``None`` (dict keys made strings)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite_json(obj.item())
    return obj


def json_default(obj: Any) -> Any:
    """``json`` fallback for the values settings and meta tend to hold (numpy, paths, sets)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    return repr(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj``: NaN and infinities as ``null``, never ``NaN``."""
    return json.dumps(finite_json(obj), default=json_default, allow_nan=False, **kwargs)
