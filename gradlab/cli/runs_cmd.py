"""``gradlab runs``: list stored runs with their status and key figures."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", required=False, default="runs", type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="An aligned table, or JSON for scripts.")
@click.option("--experiment", "experiment", default=None, type=click.Path(dir_okay=False),
              metavar="FILE", help="List the grid points of this experiment file instead: done, "
                                   "running, failed or missing in DIRECTORY.")
@click.option("--profile", default="cpu", show_default=True, help="With --experiment: its profile.")
@user_errors
def runs(directory: str, fmt: str, experiment: str | None, profile: str) -> None:
    """List every run under DIRECTORY (default: runs/, where training writes).

    Shows each run's status (running, finished, failed, or stopped for a run that was
    killed), model, steps recorded out of planned, last loss, last evaluation accuracy,
    wall time and directory. Runs in subdirectories (one per experiment) are included.

    \b
    Examples:
      gradlab runs
      gradlab runs runs/depth-sweep --format json
      gradlab runs runs/batchnorm --experiment experiments/batchnorm.toml
    """
    if experiment is not None:
        from gradlab.training.experiment import format_grid_status, grid_status, load_experiment

        points = grid_status(load_experiment(experiment, profile, check=False), directory)
        click.echo(format_grid_status(points, fmt))
        return
    from gradlab.store import format_runs, summarize_runs

    click.echo(format_runs(summarize_runs(directory), fmt, root=directory))
