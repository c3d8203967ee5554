"""The gallery: one page with a picture, a finding and a link per experiment report.

``gradlab gallery reports --experiments experiments`` (or ``python -m gradlab.report.gallery
reports experiments``) takes a PNG of each report's headline figure in headless Chromium
(``images/<name>.png``, see :mod:`gradlab.report.images`) and writes ``reports/index.html``:
per experiment, the picture, the first sentence of the report's headline (its finding with
the key number), the experiment's description and the link. It reads no run data and imports
no torch.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from gradlab.common.atomic import write_text_atomic
from gradlab.errors import GradlabError
from gradlab.report.images import report_images

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


IMAGES = "images"
_HEADLINE = re.compile(r"<p class='headline'>(.*?)</p>", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z0-9])")


def headline_sentence(report: Path) -> str | None:
    """The first sentence of a report's headline (plain text), or None without one."""
    try:
        text = report.read_text(encoding="utf-8")
    except OSError:
        return None
    match = _HEADLINE.search(text)
    if not match:
        return None
    words = html.unescape(match.group(1)).strip()
    return _SENTENCE_END.split(words, maxsplit=1)[0]


def experiment_reports(reports_dir: str | Path, experiments_dir: str | Path) -> list[tuple[Path, dict]]:
    """(report path, experiment document) for each experiment file whose report exists."""
    found = []
    for spec in sorted(Path(experiments_dir).glob("*.toml")):
        doc = tomllib.loads(spec.read_text(encoding="utf-8"))
        doc.setdefault("name", spec.stem)
        doc["_file"] = spec.name
        report = Path(reports_dir) / f"{doc['name']}.html"
        if report.exists():
            found.append((report, doc))
    return found


def build_index(reports_dir: str | Path, experiments_dir: str | Path) -> Path:
    """Write ``index.html`` in ``reports_dir`` linking every experiment report found there.

    Each entry shows ``images/<name>.png`` when present, the report's headline sentence (else
    the "Finding." paragraph of the README beside the reports) and the experiment's description.
    """
    reports_dir, experiments_dir = Path(reports_dir), Path(experiments_dir)
    findings = _findings(reports_dir / "README.md")
    rows = []
    for report, doc in experiment_reports(reports_dir, experiments_dir):
        name = str(doc["name"])
        finding = headline_sentence(report) or findings.get(doc["_file"], "")
        image = reports_dir / IMAGES / f"{name}.png"
        picture = (f'<a href="{html.escape(report.name)}"><img src="{IMAGES}/{html.escape(image.name)}" '
                   f'alt="{html.escape(name)}: headline figure" loading="eager"></a>' if image.exists() else "")
        rows.append(
            f'<li><h2><a href="{html.escape(report.name)}">{html.escape(name)}</a></h2>{picture}'
            f"<p class=finding>{html.escape(finding)}</p>"
            f"<details><summary>about this experiment</summary><p>{html.escape(str(doc.get('description', '')))}</p>"
            f"<p class=src>experiment file: {html.escape(doc['_file'])}</p></details></li>"
        )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>gradlab gallery</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}"
        "li{list-style:none;margin-bottom:2rem}ul{padding:0}img{max-width:100%;border:1px solid #ddd}"
        ".finding{font-size:1.05em;max-width:60em}.src{color:#666;font-size:.9em}</style></head><body>"
        "<h1>gradlab gallery</h1><p>One picture per experiment: its headline figure, its finding and "
        "the report (each opens offline). The numbers are in README.md beside this page.</p><ul>"
        + "".join(rows) + "</ul></body></html>"
    )
    out = reports_dir / "index.html"
    return write_text_atomic(out, page)


def build_gallery(reports_dir: str | Path, experiments_dir: str | Path, *, images: bool = True) -> Path:
    """Take the picture of each experiment report (unless ``images`` is False) and write the index."""
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise GradlabError(f"{reports_dir} is not a directory of reports; pass the folder that holds them")
    if not Path(experiments_dir).is_dir():
        raise GradlabError(f"{experiments_dir} is not a directory of experiment files; pass --experiments DIR")
    found = experiment_reports(reports_dir, experiments_dir)
    if not found:
        raise GradlabError(f"no experiment report in {reports_dir}: build them first with gradlab run")
    if images:
        report_images([report for report, _ in found], reports_dir / IMAGES)
    return build_index(reports_dir, experiments_dir)


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
    print(build_gallery(*args))
