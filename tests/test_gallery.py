"""The gallery index: links each report present, with its description and finding, escaped."""

import pytest

from gradlab.report.gallery import build_index


def test_index_links_reports_with_their_findings(tmp_path):
    reports, experiments = tmp_path / "reports", tmp_path / "experiments"
    reports.mkdir(), experiments.mkdir()
    (experiments / "a.toml").write_text('name = "alpha"\ndescription = "Depth <hurts>."\n')
    (experiments / "b.toml").write_text('name = "beta"\ndescription = "Not run."\n')
    (reports / "alpha.html").write_text("<html></html>")
    (reports / "README.md").write_text(
        "# Gallery\n\n## 1. Alpha (`a.toml`) - run\n\n| x | y |\n\nFinding. The ratio is 4.7e-9\n"
        "`code` continues the same paragraph.\n\nAnother paragraph.\n"
    )
    page = build_index(reports, experiments).read_text()
    assert 'href="alpha.html"' in page and "beta" not in page  # only reports that exist
    assert "Depth &lt;hurts&gt;." in page
    assert "Finding. The ratio is 4.7e-9 `code` continues the same paragraph." in page
    assert "Another paragraph" not in page


def test_index_shows_the_picture_and_the_headline_sentence(tmp_path):
    reports, experiments = tmp_path / "reports", tmp_path / "experiments"
    (reports / "images").mkdir(parents=True), experiments.mkdir()
    (experiments / "a.toml").write_text('name = "alpha"\ndescription = "About alpha."\n')
    (reports / "alpha.html").write_text(
        "<p class='headline'>Plain nets lose 0.393 decades per layer (ratio 4.7e-9). 2 more &lt;runs&gt;.</p>")
    (reports / "images" / "alpha.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = build_index(reports, experiments).read_text()
    assert '<img src="images/alpha.png"' in page
    assert "<p class=finding>Plain nets lose 0.393 decades per layer (ratio 4.7e-9).</p>" in page


def test_an_index_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    reports, experiments = tmp_path / "reports", tmp_path / "experiments"
    reports.mkdir(), experiments.mkdir()
    (experiments / "a.toml").write_text('name = "alpha"\n')
    (reports / "alpha.html").write_text("<html></html>")
    (reports / "index.html").mkdir()  # a directory where the index should go: the rename fails
    with pytest.raises(OSError):
        build_index(reports, experiments)
    assert sorted(p.name for p in reports.iterdir()) == ["alpha.html", "index.html"]
