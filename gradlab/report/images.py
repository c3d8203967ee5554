"""Static pictures of reports: the headline figure of each, as PNG, taken in headless Chromium.

The picture is the page's own first figure as the browser draws it (the same plotly.js and
fonts a reader sees), cut to that figure's box. Used by the gallery index and the README.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from gradlab.errors import GradlabError

#: CSS selector of the figure a picture shows: the first figure under the headline.
HEADLINE_FIGURE = "section[id^='sec-'] .plot"


def report_images(reports: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<out_dir>/<report name>.png`` of each report's headline figure; return the paths."""
    from gradlab.report.browser import chromium, open_drawn

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
            target = out / f"{report.stem}.png"
            tmp = target.with_name(f".{target.name}.tmp.png")
            if not figure.screenshot(str(tmp)):
                raise GradlabError(f"{report}: Chromium could not take the picture")
            tmp.replace(target)
            written.append(target)
    return written
