"""``gradlab report``: an HTML report from stored run directories (no training, no torch)."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="The HTML file to write (its directory is created if needed).")
@click.option("--title", default=None, help="Page title (default: the run names).")
@click.option("--plotlyjs", type=click.Choice(["embed", "beside"]), default="embed", show_default=True,
              help="Embed plotly.js in the file, or write plotly.min.js once beside it (for a folder of reports).")
@click.option("--all-layers", is_flag=True, default=False,
              help="Draw every recorded layer in the depth profiles and heatmaps (default: the weight layers).")
@user_errors
def report(run_dirs: tuple[str, ...], out: str, title: str | None, plotlyjs: str, all_layers: bool) -> None:
    """Write one HTML report comparing the runs in RUN_DIRS.

    The report opens offline from a file: gradient-flow heatmaps, depth profiles, training
    curves, the total norm with clipping, activation statistics, update ratios, where
    non-finite values appeared, and a diagnosis with numbers and suggestions.

    \b
    Examples:
      gradlab report runs/plain34-1a2b3c runs/resnet34-4d5e6f -o plain-vs-res.html
      gradlab report runs/* -o reports/all.html --plotlyjs beside
    """
    from gradlab.report import report_from_dirs

    path = report_from_dirs(list(run_dirs), out, title=title, plotlyjs=plotlyjs, all_layers=all_layers)
    click.echo(f"report: {path}")
