"""Experiments as files: a TOML spec of runs, a grid over any setting, and profiles.

An experiment file looks like this::

    name = "plain_vs_residual"
    description = "Plain nets lose the gradient toward the input; residual nets keep it."

    [defaults]                 # any TrainConfig field, shared by every run
    batch_size = 64
    lr = 0.1

    [grid]                     # the cartesian product of these lists
    model = ["plain20:norm=none", "resnet20:norm=none"]
    seed = [0]

    [profiles.cpu]             # the default profile: minutes on a laptop CPU
    steps = 200

    [profiles.full]            # the papers' recipe, for a GPU and the real dataset
    data = "cifar10"
    steps = 64000
    schedule = "step:32000,48000"
    [profiles.full.grid]       # a profile may replace grid axes too
    model = ["plain56", "resnet56"]

Everything is checked before any training starts: unknown keys and bad values are refused
with the file, the key and the valid values named, for every grid point that will run. The
grid is counted before any point is built, and one larger than ``max_points`` is refused.

The training length is given once: a table that sets ``steps`` replaces an ``epochs`` set by a
table before it (``[defaults]``, then the profile, then the grid) and the other way round, as
``--steps`` and ``--epochs`` do on the command line; one table setting both is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradlab.common.names import safe_slug
from gradlab.errors import GradlabError, terminal_safe
from gradlab.report import build_report
from gradlab.store import find_runs, load_run
from gradlab.training.config import TrainConfig
from gradlab.training.launch import import_ray, run_with_ray, shard_points
from gradlab.training.loop import train_run
from gradlab.training.preflight import check_output_dir, check_output_file, check_run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOP_KEYS = ("name", "description", "defaults", "grid", "profiles", "report")
DEFAULT_PROFILE = "cpu"
#: Most grid points one experiment may run; ``--max-points`` lifts it.
MAX_GRID_POINTS = 10_000
_LENGTH_KEYS = ("steps", "epochs")


@dataclass
class Experiment:
    """A parsed experiment: its name, text, and the runs of the chosen profile."""

    name: str
    description: str
    profile: str
    configs: list[TrainConfig]
    path: Path


def load_experiment(
    path: str | Path, profile: str = DEFAULT_PROFILE, overrides: dict[str, Any] | None = None,
    *, limit: int | None = None, max_points: int = MAX_GRID_POINTS, check: bool = True,
) -> Experiment:
    """Parse and fully validate an experiment file for one profile.

    Only the first ``limit`` grid points are built (all of them without a limit); more than
    ``max_points`` of them is refused before any is built. ``check=False`` skips what needs
    torch (model specs, memory, devices): enough to know each point's run id.
    """
    path = Path(path)
    where = str(path)
    doc = _read_toml(path)
    name = doc.get("name") or path.stem
    if not isinstance(name, str):
        raise GradlabError(f"{where}: 'name' must be a string")
    defaults, chosen, grid = _sections(doc, profile, where)
    settings: dict[str, Any] = {}
    for layer in (defaults, chosen, overrides or {}):
        settings = _layered(settings, layer)
    extra = settings.get("extra", {})
    if not isinstance(extra, dict):
        raise GradlabError(f"{where}: 'extra' must be a table of labels ([defaults.extra])")
    keys = list(grid)
    count = math.prod(len(grid[k]) for k in keys)
    wanted = count if limit is None else min(limit, count)
    if wanted > max_points:
        raise GradlabError(
            f"{where}: the grid has {count:,} points, more than the limit of {max_points:,}; "
            f"narrow the grid, run part of it with --limit N, or lift the limit with "
            f"--max-points {wanted}"
        )
    configs = []
    for point in itertools.islice(itertools.product(*(grid[k] for k in keys)), wanted):
        values = _layered(settings, dict(zip(keys, point)))
        values["extra"] = {
            **extra,
            "experiment": name,
            "profile": profile,
            "grid": {k: v for k, v in zip(keys, point)},
        }
        configs.append(_config(values, where, check))
    if not configs:
        raise GradlabError(f"{where}: the experiment defines no runs; add [grid] model = [...]")
    return Experiment(name=name, description=str(doc.get("description", "")), profile=profile,
                      configs=configs, path=path)


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, with only the known top-level keys."""
    if not path.is_file():
        raise GradlabError(f"experiment file {str(path)!r} not found: pass the path to a .toml file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GradlabError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise GradlabError(f"{path}: unknown key {unknown[0]!r}; valid top-level keys: {', '.join(TOP_KEYS)}")
    return doc


def _sections(doc: dict[str, Any], profile: str, where: str) -> tuple[dict, dict, dict]:
    """The ``[defaults]``, the chosen profile's settings and the grid (the profile's axes
    replacing the file's), with every key checked against :class:`TrainConfig`."""
    defaults = _table(doc, "defaults", where)
    grid = _table(doc, "grid", where)
    profiles = _table(doc, "profiles", where)
    if profiles and profile not in profiles:
        raise GradlabError(f"{where}: no profile {profile!r}; this file has: {', '.join(profiles)}")
    if not profiles and profile != DEFAULT_PROFILE:
        raise GradlabError(f"{where}: no profile {profile!r}; this file defines no [profiles]")
    chosen = dict(_table(profiles, profile, f"{where} [profiles]")) if profiles else {}
    grid = {**grid, **_table(chosen, "grid", f"{where} [profiles.{profile}]")}
    chosen.pop("grid", None)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for section, table in (("defaults", defaults), (f"profiles.{profile}", chosen), ("grid", grid)):
        for key in table:
            if key not in fields:
                raise GradlabError(
                    f"{where} [{section}]: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}"
                )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GradlabError(f"{where} [grid]: {key!r} must be a non-empty list, e.g. {key} = [...]")
    return defaults, chosen, grid


def run_experiment(
    path: str | Path,
    *,
    profile: str = DEFAULT_PROFILE,
    out: str | Path | None = None,
    report: str | Path | None = None,
    rerun: bool = False,
    quiet: bool = False,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    plotlyjs: str = "embed",
    max_points: int = MAX_GRID_POINTS,
    shard: tuple[int, int] | None = None,
    report_only: bool = False,
    launcher: str = "serial",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_point: float = 1,
    gpus_per_point: float = 0,
    progress: Any = None,
) -> tuple[Path | None, list[Path]]:
    """Run every point of an experiment (or the first ``limit``) and write its report.

    Every point that will run, the output directory and the report path are checked before
    the first point starts. ``shard=(K, N)`` runs the K-th of N deterministic parts of the
    grid and writes no report (returns ``None`` for it); ``report_only`` trains nothing and
    builds the report from the finished runs in ``out``; ``launcher="ray"`` trains the points
    as Ray tasks (see :mod:`gradlab.training.launch`).
    """
    if launcher not in ("serial", "ray"):
        raise GradlabError(f"--launcher must be serial or ray, got {launcher!r}")
    if launcher == "ray":
        import_ray()  # says how to install it before any other work
    experiment = load_experiment(path, profile, overrides, limit=limit, max_points=max_points,
                                 check=not report_only)
    slug = safe_slug(experiment.name, fallback="experiment")
    out = Path(out) if out is not None else Path("runs") / slug
    report_path = Path(report) if report is not None else out / f"{slug}.html"
    title = f"{experiment.name} ({experiment.profile} profile)"
    if report_only:
        return _report_from_store(experiment, out, report_path, title, plotlyjs), []
    check_output_dir(out, "--out")
    if shard is None:
        check_output_file(report_path, "--report")
    configs = shard_points(experiment.configs, shard)
    if launcher == "ray":
        run_dirs = _train_with_ray(configs, out, address=address, workers=workers,
                                   cpus=cpus_per_point, gpus=gpus_per_point, rerun=rerun,
                                   progress=progress)
    else:
        run_dirs = _train_serially(configs, out, rerun=rerun, quiet=quiet)
    if shard is not None:
        return None, run_dirs
    _build(run_dirs, report_path, title, plotlyjs)
    return report_path, run_dirs


def _train_serially(configs: list[TrainConfig], out: Path, *, rerun: bool, quiet: bool) -> list[Path]:
    """Train the points one after the other in this process; the run directories."""
    outcomes = [train_run(config, out, rerun=rerun, quiet=quiet) for config in configs]
    reused = sum(o.reused for o in outcomes)
    if reused and not quiet:
        print(f"{reused} of {len(outcomes)} grid points reused a finished run with the same settings; "
              "pass --rerun to train them again", file=sys.stderr)
    return [o.path for o in outcomes]


def _train_with_ray(configs: list[TrainConfig], out: Path, **options: Any) -> list[Path]:
    """Train the points as Ray tasks; one line naming the first failure if any failed."""
    run_dirs, failures = run_with_ray(configs, out, **options)
    if failures:
        first = failures[0]
        raise GradlabError(
            f"{len(failures)} of {len(configs)} grid points failed (first: {first.label()}: "
            f"{first.error}); run the same command again to retry only the points without a "
            "finished run"
        )
    return run_dirs


def _build(run_dirs: list[Path], report_path: Path, title: str, plotlyjs: str) -> None:
    build_report([load_run(p) for p in run_dirs], report_path, title=title, plotlyjs=plotlyjs)


def _report_from_store(experiment: Experiment, out: Path, report_path: Path, title: str,
                       plotlyjs: str) -> Path:
    """The report of every grid point, from the finished runs in ``out`` (nothing trained)."""
    points = grid_status(experiment, out)
    missing = [p for p in points if p["status"] != "done"]
    if missing:
        raise GradlabError(
            f"{len(missing)} of {len(points)} grid points have no finished run in {out} (first: "
            f"{missing[0]['point']}, {missing[0]['status']}); run them first, or see which with "
            f"`gradlab runs {out} --experiment {experiment.path}`"
        )
    _build([Path(p["path"]) for p in points], report_path, title, plotlyjs)
    return report_path


#: Settings a run fills in for the machine it ran on when the file leaves them out (the
#: default training length, the CPU thread count): a stored run matches a grid point whatever
#: they were, so points trained on other machines (shards, Ray workers) count.
_MACHINE_SETTINGS = ("steps", "threads")


def _matches(config: TrainConfig, spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    for key, value in config.to_dict().items():
        if value is None and key in _MACHINE_SETTINGS:
            continue
        if spec.get(key) != value:
            return False
    return True


def grid_status(experiment: Experiment, out: str | Path) -> list[dict[str, Any]]:
    """Each grid point of ``experiment`` with its state in the store at ``out``: ``done`` (a
    finished run), ``running``, ``failed`` (failed or stopped) or ``missing``, and its run
    directory (the best one for that point) or ``None``. A stored run belongs to a point when
    its recorded settings are the point's (see :data:`_MACHINE_SETTINGS`). Torch-free."""
    stored = [e for e in find_runs(out) if e.error is None]
    rank = {"finished": 3, "running": 2, "failed": 1, "stopped": 1}
    points = []
    for config in experiment.configs:
        entries = [e for e in stored if _matches(config, e.meta.get("spec"))]
        best = max(entries, key=lambda e: (rank.get(e.status, 0), str(e.meta.get("started_at"))),
                   default=None)
        status = "missing" if best is None else {"finished": "done", "running": "running"}.get(
            best.status, "failed")
        grid = config.extra.get("grid") or {"model": config.model}
        points.append({"point": ", ".join(f"{k}={v}" for k, v in grid.items()), "status": status,
                       "path": str(best.path) if best is not None else None,
                       "run_id": best.run_id if best is not None else None})
    return points


def _layered(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; a length (steps or epochs) in ``top`` replaces the other one."""
    merged = dict(base)
    for key in _LENGTH_KEYS:
        if key in top:
            for other in _LENGTH_KEYS:
                if other != key and other not in top:
                    merged.pop(other, None)
    merged.update(top)
    return merged


def _table(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise GradlabError(f"{where}: {key!r} must be a table ([{key}])")
    return value


def _config(values: dict[str, Any], where: str, check: bool = True) -> TrainConfig:
    """Build and check one run's settings: types, choices, model spec, clipping, schedule."""
    config = TrainConfig.from_dict(values, where)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        _check_type(f.name, value, default, where)
    try:
        check_run(config) if check else config.validate()
    except GradlabError as exc:
        point = values.get("extra", {}).get("grid") or {}
        at = f" (grid point {', '.join(f'{k}={v!r}' for k, v in point.items())})" if point else ""
        raise GradlabError(f"{where}{at}: {exc}") from None
    return config


def _check_type(name: str, value: Any, default: Any, where: str) -> None:
    if value is None or default is None or name == "extra":
        return
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise GradlabError(
            f"{where}: {name!r} must be {expected.__name__}, got {value!r} ({type(value).__name__})"
        )


def format_grid_status(points: list[dict[str, Any]], fmt: str = "table") -> str:
    """:func:`grid_status` as an aligned table with a count per state, or as JSON."""
    if fmt == "json":
        return json.dumps(points, indent=2)
    counts = {state: sum(p["status"] == state for p in points)
              for state in ("done", "running", "failed", "missing")}
    rows = [("STATUS", "POINT", "RUN")] + [
        (p["status"], terminal_safe(p["point"]), terminal_safe(p["path"] or "-")) for p in points]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()) + f" of {len(points)} points")
    return "\n".join(lines)
