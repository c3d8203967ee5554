"""``gradlab run``: run an experiment file and write its report."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--profile", default="cpu", show_default=True, help="Which [profiles.*] table to use (e.g. full).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Directory for the run directories (default: runs/<experiment name>).")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Report file (default: OUT/<experiment name>.html).")
@click.option("--plotlyjs", type=click.Choice(["embed", "beside"]), default="embed", show_default=True,
              help="Embed plotly.js in the report, or write it once beside it (for a gallery).")
@click.option("--rerun", is_flag=True, help="Train again even where a finished run with the same settings exists.")
@click.option("--limit", type=int, default=None, help="Run only the first N grid points.")
@click.option("--max-points", type=int, default=None, metavar="N",
              help="Allow grids of more than 10,000 points (counted before any is built).")
@click.option("--shard", default=None, metavar="K/N",
              help="Run only the K-th of N deterministic parts of the grid (point i goes to part "
                   "i mod N + 1); no report: build it with --report-only once every part is done.")
@click.option("--report-only", is_flag=True,
              help="Train nothing: write the report from the finished runs in OUT.")
@click.option("--launcher", type=click.Choice(["serial", "ray"]), default="serial", show_default=True,
              help="serial: one point after another here; ray: one Ray task per point.")
@click.option("--address", default=None, metavar="ADDR",
              help="With --launcher ray: an existing Ray cluster (default: start a local instance).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --launcher ray and no --address: CPUs of the local instance (default: all).")
@click.option("--cpus-per-point", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --launcher ray: CPUs each grid point asks for.")
@click.option("--gpus-per-point", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --launcher ray: GPUs each grid point asks for.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def run(file: str, profile: str, out: str | None, report_path: str | None, plotlyjs: str, rerun: bool,
        limit: int | None, max_points: int | None, shard: str | None, report_only: bool,
        launcher: str, address: str | None, workers: int | None, cpus_per_point: float,
        gpus_per_point: float, quiet: bool) -> None:
    """Run every grid point of the experiment FILE (TOML) and write one report.

    \b
    Examples:
      gradlab run experiments/plain_vs_residual.toml
      gradlab run experiments/plain_vs_residual.toml --profile full --out runs/full
      gradlab run experiments/batchnorm.toml --launcher ray --workers 4
      gradlab run experiments/batchnorm.toml --out runs/bn --shard 2/8   # e.g. in a SLURM array
      gradlab run experiments/batchnorm.toml --out runs/bn --report-only
    """
    from gradlab.errors import GradlabError
    from gradlab.training.experiment import MAX_GRID_POINTS, run_experiment
    from gradlab.training.launch import parse_shard

    if limit is not None and limit <= 0:
        raise GradlabError(f"--limit must be positive, got {limit}")
    if max_points is not None and max_points <= 0:
        raise GradlabError(f"--max-points must be positive, got {max_points}")
    report, run_dirs = run_experiment(file, profile=profile, out=out, report=report_path, rerun=rerun,
                                      quiet=quiet, limit=limit, plotlyjs=plotlyjs,
                                      max_points=max_points or MAX_GRID_POINTS,
                                      shard=parse_shard(shard), report_only=report_only,
                                      launcher=launcher, address=address, workers=workers,
                                      cpus_per_point=cpus_per_point, gpus_per_point=gpus_per_point)
    for path in run_dirs:
        click.echo(f"run: {path}")
    if report is not None:
        click.echo(f"report: {report}")
    else:
        click.echo(f"shard {shard} done; once every shard is, write the report with "
                   f"`gradlab run {file} --report-only` and the same --out")
