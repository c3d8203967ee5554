"""Train several networks with the same settings and write one comparison report."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gradlab.analysis.comparison import Comparison, compare_runs, format_comparison
from gradlab.errors import GradlabError
from gradlab.models import parse_spec
from gradlab.report import build_report
from gradlab.store import load_run
from gradlab.training import distributed
from gradlab.training.config import TrainConfig
from gradlab.training.loop import train_run
from gradlab.training.preflight import check_output_dir, check_output_file, check_run


@dataclasses.dataclass
class CompareResult:
    """What :func:`compare_models` did: the report, the runs, and the comparison verdict."""

    report: Path | None  # None on ranks other than 0 under torchrun
    run_dirs: list[Path]
    reused: list[bool]  # per run: a finished run was reused, nothing trained
    comparison: Comparison | None

    def summary(self) -> str:
        """The terminal's closing summary: a line per run, the verdict, where the report is."""
        lines = [f"run: {path}" for path in self.run_dirs]
        if self.comparison is not None:
            lines += ["", format_comparison(self.comparison), ""]
        if any(self.reused):
            lines.append("reused runs were trained earlier with the same settings; pass --rerun to train them again")
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


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
    result = compare_models(models, settings, out, report=report, rerun=rerun, quiet=quiet)
    return result.report, result.run_dirs


def compare_models(
    models: list[str],
    settings: TrainConfig,
    out: str | Path = "runs",
    *,
    report: str | Path | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> CompareResult:
    """:func:`compare`, returning the comparison verdict and which runs were reused as well."""
    if len(models) < 1:
        raise GradlabError("give at least one model spec, e.g. gradlab compare plain34 resnet34")
    for spec in models:  # refuse a bad spec before any training starts
        parse_spec(spec)
    configs = [dataclasses.replace(settings, model=spec) for spec in models]
    for config in configs:  # every setting, the data, the device and the memory, up front
        check_run(config)
    check_output_dir(out, "--out")
    check_output_file(report, "--report")
    outcomes = [train_run(config, out, rerun=rerun, quiet=quiet) for config in configs]
    run_dirs = [o.path for o in outcomes]
    reused = [o.reused for o in outcomes]
    if distributed.launched_by_torchrun() and not distributed.is_main_process():
        return CompareResult(None, run_dirs, reused, None)
    report_path = Path(report) if report is not None else Path(out) / _report_name(models)
    runs = _load(run_dirs)
    comparison = compare_runs(runs, reused=reused)
    return CompareResult(_write(runs, report_path), run_dirs, reused, comparison)


def write_report(run_dirs: list[Path], report_path: Path, title: str | None = None) -> Path:
    """Load stored runs and write their HTML report."""
    return _write(_load(run_dirs), report_path, title)


def _load(run_dirs: list[Path]) -> list:
    return [load_run(path) for path in run_dirs]


def _write(runs: list, report_path: Path, title: str | None = None) -> Path:
    return build_report(runs, report_path, title=title)


def _report_name(models: list[str]) -> str:
    stem = "-vs-".join(re.sub(r"[^A-Za-z0-9_.=-]+", "_", m) for m in models)
    return f"compare-{stem[:120]}.html"

