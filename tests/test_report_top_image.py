"""The picture of a report's top (the README's picture of the main job), taken in Chromium."""

from __future__ import annotations

import struct

import pytest

from gradlab.bench.report import synthetic_run
from gradlab.report import build_report
from gradlab.report.images import main, report_top_image


def _png_size(path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (bytes 16-24), read by hand."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.browser
def test_top_image_shows_the_headline_and_the_first_figure(tmp_path):
    runs = [synthetic_run(steps=12, blocks=(1, 1), name=n, seed=i, clip=None) for i, n in enumerate("ab")]
    report = build_report(runs, tmp_path / "r.html")
    target = report_top_image(report, tmp_path / "img" / "top.png", width=1000)
    width, height = _png_size(target)
    assert width == 1000
    # The headline alone is ~200 px; the first figure is several hundred more.
    assert 500 < height < 2000
    assert not list(target.parent.glob(".*"))  # no temporary file left


def test_missing_report_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.html"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: report ") and "\n" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.browser
def test_a_picture_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    runs = [synthetic_run(steps=12, blocks=(1, 1), name="a", clip=None)]
    report = build_report(runs, tmp_path / "r.html")
    target = tmp_path / "img" / "top.png"
    target.mkdir(parents=True)  # a directory where the picture should go: the rename fails
    with pytest.raises(OSError):
        report_top_image(report, target, width=800)
    assert [p.name for p in target.parent.iterdir()] == ["top.png"] and target.is_dir()
