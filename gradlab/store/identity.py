"""The identity of a run: a short hash of its settings, the same in every process and version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gradlab.common.jsonsafe import finite_json, json_default


def run_id_for(spec: dict[str, Any]) -> str:
    """A stable 12-hex-digit identity for a run's settings.

    The hash covers the canonical JSON of ``spec`` (keys sorted at every level, no
    whitespace), so the order in which settings were given does not matter, while any
    changed value gives a different id.
    """
    if not isinstance(spec, dict):
        raise TypeError(f"run_id_for expects a dict of settings, got {type(spec).__name__}")
    # The exact text hashed is part of every stored run's identity: changing these options
    # changes every id, and finished runs would no longer be found and reused.
    text = json.dumps(
        finite_json(spec), sort_keys=True, separators=(",", ":"), default=json_default,
        ensure_ascii=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
