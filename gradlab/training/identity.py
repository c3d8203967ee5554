"""What makes a run the run it is: its settings resolved for this machine, its id, its folder.

Two runs with the same resolved settings are the same run: ``gradlab compare``, ``gradlab run``
and the Ray launcher find a finished one by its id and reuse it instead of training again.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from gradlab.store import run_id_for
from gradlab.training.config import TrainConfig
from gradlab.training.device import resolve_device

DEFAULT_OUT = "runs"

#: Training length when neither steps nor epochs is given: what the main job needs to show
#: resnet34 learning while plain34 does not, in about a minute and a half per net on a 2-core
#: CPU, and more on a GPU, where steps are cheap.
DEFAULT_STEPS = {"cpu": 300, "cuda": 2000}


def resolve_settings(config: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """The settings with what depends on the machine filled in: the training length when
    neither ``steps`` nor ``epochs`` is given, and the CPU thread count.

    A CPU run's numbers depend on the thread count (reductions are split differently), so the
    count becomes part of the run's identity: a run recorded with 1 thread is never reused as
    one with 2.
    """
    device = resolve_device(config.device) if device is None else device
    changes: dict[str, Any] = {}
    if config.steps is None and config.epochs is None:
        changes["steps"] = DEFAULT_STEPS.get(device.type, DEFAULT_STEPS["cpu"])
    if device.type == "cpu" and config.threads is None:
        changes["threads"] = torch.get_num_threads()
    return dataclasses.replace(config, **changes) if changes else config


def run_id(config: TrainConfig) -> str:
    """The run's id: a hash of its settings (see :meth:`TrainConfig.identity`)."""
    return run_id_for(config.identity())


def run_dir_for(config: TrainConfig, out: str | Path = DEFAULT_OUT) -> Path:
    """Where a run with these settings lives: ``OUT/<model-slug>-<hash of the settings>``."""
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", config.model).strip("_")[:60] or "run"
    return Path(out) / f"{slug}-{run_id(config)}"
