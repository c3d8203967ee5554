"""``gradlab compare``: train several networks and write their comparison report."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors
from gradlab.cli._train_options import config_from_options, train_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True)
@train_options
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Directory for run directories and the report.")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Report file (default: OUT/compare-<models>.html).")
@click.option("--rerun", is_flag=True, help="Train again even if a finished run with the same settings exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def compare(models: tuple[str, ...], out: str, report_path: str | None, rerun: bool, quiet: bool,
            **options) -> None:
    """Train MODELS with the same settings and write a comparison report.

    \b
    Examples:
      gradlab compare plain34 resnet34
      gradlab compare plain56:norm=none resnet56:norm=none --steps 300
      gradlab compare resnet20 resnet56 --data cifar10 --data-dir ~/data --augment
      torchrun --nproc-per-node 2 -m gradlab compare plain34 resnet34
    """
    from gradlab.training.compare import compare_models

    settings = config_from_options("", options)
    result = compare_models(list(models), settings, out, report=report_path, rerun=rerun, quiet=quiet)
    if result.report is None:
        return
    click.echo(result.summary())
