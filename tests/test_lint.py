"""The habits: ruff and mypy may not find more problems than their recorded baselines.

The baselines (``ruff_baseline.txt``, ``mypy_baseline.txt`` beside this file) hold, per file,
how many violations each tool reported when it was switched on. A file may only go down: a
change that adds a violation fails here with the new messages. After fixing some, write the
lower counts with::

    python tests/test_lint.py --update

The tools come with the ``lint`` extra; without them these tests are skipped, with them a
growth fails.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF_BASELINE = Path(__file__).with_name("ruff_baseline.txt")
MYPY_BASELINE = Path(__file__).with_name("mypy_baseline.txt")

# "path:line:col: CODE message" (ruff --output-format concise); "path:line: error: ..." (mypy)
_RUFF_LINE = re.compile(r"^(?P<path>[^:\s][^:]*):\d+:\d+: (?P<code>[A-Z]+\d+) ")
_MYPY_LINE = re.compile(r"^(?P<path>[^:\s][^:]*):\d+: error: ")


def ruff_messages() -> list[str]:
    """Every violation ``ruff check`` reports on the repository, with the pyproject settings."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "--no-cache", "."],
        cwd=REPO, capture_output=True, text=True,
    )
    if result.returncode not in (0, 1):  # 1: violations found; anything else: ruff itself failed
        raise RuntimeError(f"ruff failed ({result.returncode}): {result.stderr.strip()}")
    return [line for line in result.stdout.splitlines() if _RUFF_LINE.match(line)]


def mypy_messages() -> list[str]:
    """Every error mypy reports on the files named in pyproject's ``[tool.mypy]``."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context"],
        cwd=REPO, capture_output=True, text=True,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"mypy failed ({result.returncode}): {result.stderr.strip()}")
    return [line for line in result.stdout.splitlines() if _MYPY_LINE.match(line)]


def per_file(messages: list[str], pattern: re.Pattern[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in messages:
        match = pattern.match(line)
        if match:
            counts[match["path"].replace("\\", "/")] += 1
    return counts


def read_baseline(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            count, name = line.split(maxsplit=1)
            counts[name] = int(count)
    return counts


def write_baseline(path: Path, counts: Counter[str], tool: str) -> None:
    lines = [f"# {tool}: violations per file; may only go down (python tests/test_lint.py --update)"]
    lines += [f"{counts[name]} {name}" for name in sorted(counts) if counts[name]]
    path.write_text("\n".join(lines) + "\n")


def grown(now: Counter[str], baseline: Counter[str]) -> dict[str, tuple[int, int]]:
    """Files with more violations than their baseline: ``{path: (baseline, now)}``."""
    return {name: (baseline[name], count) for name, count in sorted(now.items()) if count > baseline[name]}


def _explain(tool: str, growth: dict[str, tuple[int, int]], messages: list[str]) -> str:
    lines = [f"{tool} finds more problems than its baseline:"]
    for name, (before, after) in growth.items():
        lines.append(f"  {name}: {before} -> {after}")
        lines += [f"    {m}" for m in messages if m.replace("\\", "/").startswith(name + ":")]
    return "\n".join(lines)


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[lint]')")


def test_grown_names_only_files_above_their_baseline():
    # The comparison itself, on hand-made counts: the ruff and mypy tests rest on it.
    baseline = Counter({"a.py": 2, "b.py": 1})
    now = Counter({"a.py": 2, "b.py": 3, "c.py": 1})
    assert grown(now, baseline) == {"b.py": (1, 3), "c.py": (0, 1)}
    assert grown(Counter({"a.py": 1}), baseline) == {}


def test_per_file_counts_parse_both_tools_formats():
    ruff = ["gradlab/x.py:3:1: F401 [*] `os` imported but unused", "gradlab/x.py:9:121: E501 Line too long",
            "Found 2 errors."]
    mypy = ["gradlab/store/core.py:12: error: Incompatible types  [assignment]", "gradlab/store/core.py:13: note: see"]
    assert per_file([m for m in ruff if _RUFF_LINE.match(m)], _RUFF_LINE) == Counter({"gradlab/x.py": 2})
    assert per_file([m for m in mypy if _MYPY_LINE.match(m)], _MYPY_LINE) == Counter({"gradlab/store/core.py": 1})


def test_ruff_finds_no_more_than_its_baseline():
    _needs("ruff")
    messages = ruff_messages()
    growth = grown(per_file(messages, _RUFF_LINE), read_baseline(RUFF_BASELINE))
    assert not growth, _explain("ruff", growth, messages)


@pytest.mark.slow
def test_mypy_finds_no_more_than_its_baseline():
    _needs("mypy")
    messages = mypy_messages()
    growth = grown(per_file(messages, _MYPY_LINE), read_baseline(MYPY_BASELINE))
    assert not growth, _explain("mypy", growth, messages)


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_lint.py --update   (rewrites the ruff and mypy baselines)")
    write_baseline(RUFF_BASELINE, per_file(ruff_messages(), _RUFF_LINE), "ruff check")
    write_baseline(MYPY_BASELINE, per_file(mypy_messages(), _MYPY_LINE), "mypy")
    print(f"wrote {RUFF_BASELINE.name} and {MYPY_BASELINE.name}")
