"""Train several networks with the same settings and write one comparison report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gradlab.config import TrainConfig
from gradlab.errors import GradlabError


def compare(
    models: list[str],
    settings: TrainConfig,
    out: str | Path = "runs",
    *,
    report: str | Path | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> tuple[Path | None, list[Path]]:
    """Train each model spec with ``settings`` and write a report over all of them.

    Finished runs with identical settings are reused unless ``rerun``. Returns the report path
    (``None`` on ranks other than 0 under torchrun) and the run directories.
    """
    from gradlab import distributed
    from gradlab.models import parse_spec
    from gradlab.train import train

    if len(models) < 1:
        raise GradlabError("give at least one model spec, e.g. gradlab compare plain34 resnet34")
    from gradlab.preflight import check_output_dir, check_output_file, check_run

    for spec in models:  # refuse a bad spec before any training starts
        parse_spec(spec)
    configs = [dataclasses.replace(settings, model=spec) for spec in models]
    for config in configs:  # every setting, the data, the device and the memory, up front
        check_run(config)
    check_output_dir(out, "--out")
    check_output_file(report, "--report")
    run_dirs = [train(config, out, rerun=rerun, quiet=quiet) for config in configs]
    if distributed.launched_by_torchrun() and not _is_rank0():
        return None, run_dirs
    report_path = Path(report) if report is not None else Path(out) / _report_name(models)
    return write_report(run_dirs, report_path), run_dirs


def write_report(run_dirs: list[Path], report_path: Path, title: str | None = None) -> Path:
    """Load stored runs and write their HTML report."""
    from gradlab.report import build_report
    from gradlab.store import load_run

    runs = [load_run(path) for path in run_dirs]
    return build_report(runs, report_path, title=title)


def _report_name(models: list[str]) -> str:
    import re

    stem = "-vs-".join(re.sub(r"[^A-Za-z0-9_.=-]+", "_", m) for m in models)
    return f"compare-{stem[:120]}.html"


def _is_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
