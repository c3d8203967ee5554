"""The gallery index: one page linking the experiment reports, with each experiment's text.

``python -m gradlab.report.gallery reports experiments`` writes ``reports/index.html`` from the
reports present and the ``name``/``description`` of each experiment file. It reads no run data
and imports no torch.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def build_index(reports_dir: str | Path, experiments_dir: str | Path) -> Path:
    """Write ``index.html`` in ``reports_dir`` linking every experiment report found there."""
    reports_dir, experiments_dir = Path(reports_dir), Path(experiments_dir)
    findings = _findings(reports_dir / "README.md")
    rows = []
    for spec in sorted(experiments_dir.glob("*.toml")):
        doc = tomllib.loads(spec.read_text(encoding="utf-8"))
        name = str(doc.get("name") or spec.stem)
        report = reports_dir / f"{name}.html"
        if not report.exists():
            continue
        rows.append(
            f'<li><h2><a href="{html.escape(report.name)}">{html.escape(name)}</a></h2>'
            f"<p>{html.escape(str(doc.get('description', '')))}</p>"
            f"<p>{html.escape(findings.get(spec.name, 'Not run yet: see README.md for the command.'))}</p>"
            f"<p class=src>experiment file: {html.escape(spec.name)}</p></li>"
        )
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>gradlab gallery</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem}"
        "li{list-style:none;margin-bottom:1.5rem}.src{color:#666;font-size:.9em}</style></head><body>"
        "<h1>gradlab gallery</h1><p>Each report opens offline; the findings with their numbers are "
        "in README.md beside this page.</p><ul>" + "".join(rows) + "</ul></body></html>"
    )
    out = reports_dir / "index.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def _findings(readme: Path) -> dict[str, str]:
    """The "Finding." paragraph of each experiment's section in the gallery README, by file name."""
    if not readme.exists():
        return {}
    found: dict[str, str] = {}
    current = None
    paragraph: list[str] = []
    for line in readme.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("## "):
            current = next((w.strip("`()") for w in line.split() if w.strip("`()").endswith(".toml")), None)
        if paragraph and not line.strip():
            if current and paragraph[0].startswith("Finding"):
                found.setdefault(current, " ".join(paragraph))
            paragraph = []
        elif line.startswith(("#", "|", "```")):
            paragraph = []
        elif line.strip():
            paragraph.append(line.strip())
    return found


if __name__ == "__main__":
    args = sys.argv[1:] or ["reports", "experiments"]
    print(build_index(*args))
