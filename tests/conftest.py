"""Shared by every test module: the time of each test tier, printed at the end of a run.

The suite has two tiers (see the markers in pyproject.toml): the fast default one,
``-m "not slow"``, and ``-m slow``. ``python -m pytest -q`` runs both; its last lines say how
long each took, so a test that should be marked slow shows up in the fast tier's figure.
"""

from __future__ import annotations

import time

_tier_seconds: dict[str, float] = {"fast": 0.0, "slow": 0.0}
_tier_tests: dict[str, int] = {"fast": 0, "slow": 0}
_started = time.perf_counter()


def pytest_runtest_logreport(report):
    tier = "slow" if "slow" in report.keywords else "fast"
    _tier_seconds[tier] += report.duration  # setup, call and teardown each add their part
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tier_tests[tier] += 1


def pytest_terminal_summary(terminalreporter):
    wall = time.perf_counter() - _started
    parts = [f"{tier} tier {_tier_tests[tier]} tests {_tier_seconds[tier]:.1f} s" for tier in ("fast", "slow")]
    terminalreporter.write_line(f"suite time: {wall:.1f} s wall ({'; '.join(parts)})")
