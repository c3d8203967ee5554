"""A headless Chromium driven by selenium: the browser the gallery's images are taken with.

selenium is an optional dependency (``pip install 'gradlab[images]'``); Chromium and its
driver come from the system (Debian: ``apt-get install chromium chromium-driver``), or from
the paths in ``GRADLAB_CHROMIUM`` and ``GRADLAB_CHROMEDRIVER``. Every start uses a fresh
profile directory and no network services, so a picture depends on the page alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from gradlab.errors import GradlabError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
WINDOW = (1400, 1000)

#: JavaScript: [div id, drawn?] for every plotly figure on the page.
DRAWN_JS = ("return Array.from(document.querySelectorAll('.plotly-graph-div'))"
            ".map(d => [d.id, d._fullLayout !== undefined && d.querySelector('svg.main-svg') !== null]);")


def _find(env: str, default: str, name: str) -> str | None:
    path = os.environ.get(env, default)
    return path if os.path.exists(path) else shutil.which(name)


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[Any]:
    """A selenium driver of a headless Chromium with a fresh profile; quit on exit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise GradlabError("taking pictures of reports needs selenium: pip install 'gradlab[images]'") from None
    binary = _find("GRADLAB_CHROMIUM", "/usr/bin/chromium", "chromium")
    driver_path = _find("GRADLAB_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
    if not binary or not driver_path:
        raise GradlabError("no Chromium found: install chromium and chromium-driver, or set "
                           "GRADLAB_CHROMIUM and GRADLAB_CHROMEDRIVER to their paths")
    with tempfile.TemporaryDirectory(prefix="gradlab-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            driver = webdriver.Chrome(service=Service(driver_path), options=options)
        except Exception as exc:  # selenium wraps every start-up failure differently
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GradlabError(f"Chromium did not start ({first}); check that chromium and "
                               "chromedriver are the same version") from None
        try:
            yield driver
        finally:
            driver.quit()


def open_drawn(driver: Any, page: str | os.PathLike[str], timeout: float = 60.0) -> dict[str, bool]:
    """Open a local page and wait until every plotly figure on it is drawn (or ``timeout``).

    Returns figure id -> drawn.
    """
    driver.get(Path(page).resolve().as_uri())
    deadline = time.monotonic() + timeout
    while True:
        drawn = dict(driver.execute_script(DRAWN_JS))
        if all(drawn.values()) or time.monotonic() > deadline:
            return drawn
        time.sleep(0.2)
