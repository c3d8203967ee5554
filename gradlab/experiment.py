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
with the file, the key and the valid values named.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradlab.config import TrainConfig
from gradlab.errors import GradlabError
from gradlab.names import safe_slug

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOP_KEYS = ("name", "description", "defaults", "grid", "profiles", "report")
DEFAULT_PROFILE = "cpu"


@dataclass
class Experiment:
    """A parsed experiment: its name, text, and the runs of the chosen profile."""

    name: str
    description: str
    profile: str
    configs: list[TrainConfig]
    path: Path


def load_experiment(
    path: str | Path, profile: str = DEFAULT_PROFILE, overrides: dict[str, Any] | None = None
) -> Experiment:
    """Parse and fully validate an experiment file for one profile."""
    path = Path(path)
    if not path.is_file():
        raise GradlabError(f"experiment file {str(path)!r} not found: pass the path to a .toml file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GradlabError(f"{path}: not valid TOML ({exc})") from None
    where = str(path)
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise GradlabError(f"{where}: unknown key {unknown[0]!r}; valid top-level keys: {', '.join(TOP_KEYS)}")
    name = doc.get("name") or path.stem
    if not isinstance(name, str):
        raise GradlabError(f"{where}: 'name' must be a string")
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
    settings = {**defaults, **chosen, **(overrides or {})}

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for section, table in (("defaults", defaults), (f"profiles.{profile}", chosen), ("grid", grid)):
        for key in table:
            if key not in fields:
                raise GradlabError(
                    f"{where} [{section}]: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}"
                )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GradlabError(f"{where} [grid]: {key!r} must be a non-empty list, e.g. {key} = [...]")

    keys = list(grid)
    configs = []
    for point in itertools.product(*(grid[k] for k in keys)):
        values = {**settings, **dict(zip(keys, point))}
        values["extra"] = {
            **values.get("extra", {}),
            "experiment": name,
            "profile": profile,
            "grid": {k: v for k, v in zip(keys, point)},
        }
        configs.append(_config(values, where))
    if not configs:
        raise GradlabError(f"{where}: the experiment defines no runs; add [grid] model = [...]")
    return Experiment(name=name, description=str(doc.get("description", "")), profile=profile,
                      configs=configs, path=path)


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
) -> tuple[Path, list[Path]]:
    """Run every point of an experiment (or the first ``limit``) and write its report."""
    from gradlab.report import build_report
    from gradlab.store import load_run
    from gradlab.train import train

    experiment = load_experiment(path, profile, overrides)
    slug = safe_slug(experiment.name, fallback="experiment")
    out = Path(out) if out is not None else Path("runs") / slug
    configs = experiment.configs[:limit] if limit else experiment.configs
    run_dirs = [train(config, out, rerun=rerun, quiet=quiet) for config in configs]
    report_path = Path(report) if report is not None else out / f"{slug}.html"
    title = f"{experiment.name} ({experiment.profile} profile)"
    build_report([load_run(p) for p in run_dirs], report_path, title=title, plotlyjs=plotlyjs)
    return report_path, run_dirs


def _table(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise GradlabError(f"{where}: {key!r} must be a table ([{key}])")
    return value


def _config(values: dict[str, Any], where: str) -> TrainConfig:
    """Build and check one run's settings: types, choices, model spec, clipping, schedule."""
    from gradlab.clipping import parse_clip
    from gradlab.data import check_data_args
    from gradlab.models import parse_spec
    from gradlab.optim import OPTIMIZERS, lr_factor_fn

    config = TrainConfig.from_dict(values, where)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        _check_type(f.name, value, default, where)
    try:
        config.validate()
        parse_spec(config.model)
        parse_clip(config.clip)
        check_data_args(config.data, data_dir=config.data_dir, augment=config.augment)
        lr_factor_fn(config.schedule, config.steps or 1, config.warmup_steps)
    except GradlabError as exc:
        raise GradlabError(f"{where}: {exc}") from None
    if config.optimizer not in OPTIMIZERS:
        raise GradlabError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}")
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
