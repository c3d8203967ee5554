"""``gradlab gallery``: pictures of the experiment reports and the index page that shows them."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("reports_dir", default="reports", type=click.Path())
@click.option("--experiments", "experiments_dir", default="experiments", show_default=True, type=click.Path(),
              help="The folder of experiment files (.toml) whose reports to show.")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Take a PNG of each report's headline figure in headless Chromium (needs selenium: "
                   "pip install 'gradlab[images]').")
@user_errors
def gallery(reports_dir: str, experiments_dir: str, images: bool) -> None:
    """Write REPORTS_DIR/index.html: per experiment a picture, its finding and the link.

    \b
    Example:
      gradlab gallery reports --experiments experiments
    """
    from gradlab.report.gallery import build_gallery

    click.echo(f"gallery: {build_gallery(reports_dir, experiments_dir, images=images)}")
