"""A report in a real headless Chromium: loads from file://, no console errors, every figure drawn."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from gradlab.bench.report import synthetic_run
from gradlab.report import build_report

CHROMIUM = os.environ.get("GRADLAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GRADLAB_CHROMEDRIVER", "/usr/bin/chromedriver")
EVIL = "<script>alert(1)</script>"


def _find(path: str, name: str) -> str | None:
    if os.path.exists(path):
        return path
    return shutil.which(name)


@pytest.fixture
def driver(tmp_path):
    chromium, chromedriver = _find(CHROMIUM, "chromium"), _find(CHROMEDRIVER, "chromedriver")
    if not chromium or not chromedriver:
        pytest.fail("the browser test needs Chromium and its driver: install the Debian packages "
                    "chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.mark.browser
@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path, driver):
    from selenium.common.exceptions import NoAlertPresentException

    runs = [
        synthetic_run(steps=80, blocks=(2, 2, 2), name=EVIL, decay=0.3, nonfinite_at=70, clip=0.05),
        synthetic_run(steps=80, blocks=(2, 2, 2), name="resnet-like", seed=1, clip=None),
    ]
    out = build_report(runs, tmp_path / "report.html")  # default title: the run names
    html = out.read_text()
    plot_ids = re.findall(r'<div id="(fig-[a-z-]+)" class="plotly-graph-div"', html)
    assert len(plot_ids) == 9

    driver.get(out.resolve().as_uri())
    deadline = time.time() + 60
    script = ("return Array.from(document.querySelectorAll('.plotly-graph-div'))"
              ".map(d => [d.id, d.querySelector('svg.main-svg, canvas') !== null]);")
    while True:
        drawn = dict(driver.execute_script(script))
        if (drawn and all(drawn.values())) or time.time() > deadline:
            break
        time.sleep(0.25)
    assert sorted(drawn) == sorted(plot_ids)
    assert all(drawn.values()), f"figures not drawn: {[k for k, v in drawn.items() if not v]}"

    severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert severe == [], severe
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text  # the run name did not run as a script
    title = driver.find_element("css selector", "h1").text
    assert EVIL in title  # shown as text
    legend = " ".join(e.text for e in driver.find_elements("css selector", "#fig-profiles .legendtext"))
    assert EVIL in legend  # plotly drew the escaped name literally

    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 100, 16000))
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def _severe(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


@pytest.mark.browser
@pytest.mark.slow
def test_headline_figure_sits_above_the_first_table(tmp_path, driver):
    from gradlab.report.browser import open_drawn

    runs = [synthetic_run(steps=40, blocks=(2, 2), name=n, seed=i, decay=0.2 * i, clip=None)
            for i, n in enumerate(("plain-ish", "res-ish"))]
    out = build_report(runs, tmp_path / "cmp.html", plotlyjs="beside")
    drawn = open_drawn(driver, out)
    assert drawn and all(drawn.values()), drawn  # _fullLayout and .main-svg in every plot div
    assert _severe(driver) == []
    tops = driver.execute_script(
        "const top = e => e.getBoundingClientRect().top + window.scrollY;"
        "return [top(document.querySelector('.headline')), top(document.querySelector('#fig-headline-profile')),"
        " top(document.querySelector('table, details'))];")
    headline, figure, first_table = tops
    assert headline < figure < first_table


@pytest.mark.browser
@pytest.mark.slow
def test_gallery_pictures_are_taken_and_load(tmp_path, driver):
    from gradlab.report.browser import open_drawn
    from gradlab.report.gallery import build_gallery

    reports, experiments = tmp_path / "reports", tmp_path / "experiments"
    experiments.mkdir()
    for name, decay in (("alpha", 0.3), ("beta", 0.0)):
        (experiments / f"{name}.toml").write_text(f'name = "{name}"\ndescription = "About {name}."\n')
        build_report([synthetic_run(steps=30, blocks=(1, 1), name=name, decay=decay, clip=None)],
                     reports / f"{name}.html", plotlyjs="beside")
    index = build_gallery(reports, experiments)
    for name in ("alpha", "beta"):
        png = reports / "images" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    open_drawn(driver, index)
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
    assert sorted(src for src, _, _ in images) == ["images/alpha.png", "images/beta.png"]
    assert all(complete and width > 0 for _, complete, width in images), images
    assert _severe(driver) == []
    text = driver.find_element("css selector", "body").text
    assert "alpha: held-out accuracy" in text  # the report's headline sentence is the finding
