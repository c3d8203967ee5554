"""Static pictures of reports: the headline figure of each, as PNG, taken in headless Chromium.

The picture is the page's own first figure as the browser draws it (the same plotly.js and
fonts a reader sees), cut to that figure's box. Used by the gallery index and the README.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gradlab.common.atomic import write_bytes_atomic
from gradlab.errors import GradlabError
from gradlab.report.browser import chromium, open_drawn

#: CSS selector of the figure a picture shows: the first figure under the headline.
HEADLINE_FIGURE = "section[id^='sec-'] .plot"


def report_images(reports: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<out_dir>/<report name>.png`` of each report's headline figure; return the paths."""
    reports = [Path(r) for r in reports]
    for report in reports:
        if not report.is_file():
            raise GradlabError(f"report {report} not found: build it first with gradlab report or gradlab run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with chromium() as driver:
        for report in reports:
            drawn = open_drawn(driver, report)
            if not drawn or not all(drawn.values()):
                raise GradlabError(f"{report}: not every figure was drawn in Chromium; open it in a "
                                   "browser to see why")
            figure = driver.find_element("css selector", HEADLINE_FIGURE)
            driver.execute_script("arguments[0].scrollIntoView();"
                                  "document.querySelectorAll('.modebar').forEach(m => m.style.display = 'none');",
                                  figure)
            # Taken as bytes and written whole: no temporary picture to leave behind.
            png = figure.screenshot_as_png
            if not png:
                raise GradlabError(f"{report}: Chromium could not take the picture")
            written.append(write_bytes_atomic(out / f"{report.stem}.png", png))
    return written


def report_top_image(report: str | os.PathLike[str], target: str | os.PathLike[str], *,
                     width: int = 1200) -> Path:
    """Write a PNG of the top of a report: its headline and the first figure under it, as a
    reader first sees the page (the README's picture of the main job)."""
    report, target = Path(report), Path(target)
    if not report.is_file():
        raise GradlabError(f"report {report} not found: build it first with gradlab compare or gradlab report")
    target.parent.mkdir(parents=True, exist_ok=True)
    with chromium() as driver:
        driver.set_window_size(width, 900)
        drawn = open_drawn(driver, report)
        if not drawn or not all(drawn.values()):
            raise GradlabError(f"{report}: not every figure was drawn in Chromium; open it in a browser to see why")
        figure = driver.find_element("css selector", HEADLINE_FIGURE)
        driver.execute_script("document.querySelectorAll('.modebar').forEach(m => m.style.display = 'none');")
        bottom = driver.execute_script("return arguments[0].getBoundingClientRect().bottom + window.scrollY;", figure)
        # The window's inner height is what the screenshot shows: make it end below the figure.
        inner = driver.execute_script("return window.innerHeight;")
        driver.set_window_size(width, 900 + int(bottom) + 16 - int(inner))
        driver.execute_script("window.scrollTo(0, 0);")
        png = driver.get_screenshot_as_png()
        if not png:
            raise GradlabError(f"{report}: Chromium could not take the picture")
    return write_bytes_atomic(target, png)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gradlab.report.images REPORT.html OUT.png``: the top of a report as a PNG."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m gradlab.report.images REPORT.html OUT.png", file=sys.stderr)
        return 2
    try:
        print(report_top_image(args[0], args[1]))
    except GradlabError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
