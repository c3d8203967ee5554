"""Running an experiment's grid beyond one process: shards and Ray.

Shards (``--shard K/N``) split the grid deterministically: grid point ``i`` (in the order the
file's grid lists them, from 0) belongs to shard ``i mod N + 1``. Round robin spreads the
points of each model over all shards, so shards take about equally long. Each shard trains
its points into the shared output directory; the report is built afterwards from the store
(``gradlab run FILE --report-only``).

Ray (``--launcher ray``) submits one task per grid point that has no finished run yet, each
asking for ``cpus`` CPUs and ``gpus`` GPUs, to a local Ray instance or to an existing
cluster (``address``). Every task runs the same :func:`gradlab.training.loop.train` as a serial run,
so run ids and recorded values are the same. A failed point is reported; running the same
command again retries only the points without a finished run.

Ray is optional: ``pip install 'gradlab[ray]'``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradlab
from gradlab.errors import GradlabError, first_line
from gradlab.store import find_finished_run
from gradlab.training.config import TrainConfig
from gradlab.training.device import resolve_device
from gradlab.training.identity import resolve_settings, run_id
from gradlab.training.loop import train

RAY_INSTALL = "pip install 'gradlab[ray]'"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N; ``None`` stays ``None``."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*", str(text))
    if not match:
        raise GradlabError(f"--shard must be K/N, e.g. --shard 1/4; got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise GradlabError(f"--shard {k}/{n}: K must be from 1 to N, e.g. --shard 1/{max(n, 1)}")
    return k, n


def shard_points(configs: list[TrainConfig], shard: tuple[int, int] | None) -> list[TrainConfig]:
    """The grid points of shard K of N: point ``i`` goes to shard ``i mod N + 1``."""
    if shard is None:
        return list(configs)
    k, n = shard
    return [config for i, config in enumerate(configs) if i % n == k - 1]


@dataclass
class PointFailure:
    """A grid point whose task failed, and why (one line)."""

    config: TrainConfig
    error: str

    def label(self) -> str:
        grid = self.config.extra.get("grid") or {"model": self.config.model}
        return ", ".join(f"{k}={v!r}" for k, v in grid.items())


def run_with_ray(
    configs: list[TrainConfig],
    out: Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    cpus: float = 1,
    gpus: float = 0,
    rerun: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Path], list[PointFailure]]:
    """Train every config as one Ray task; returns the run directories of the points that
    finished (in grid order) and the failures.

    Points with a finished run in ``out`` are skipped without a task (unless ``rerun``).
    ``workers`` sets the CPUs of a local Ray instance (default: all of this machine's).
    """
    ray = import_ray()
    say = progress or (lambda message: print(message, file=sys.stderr))
    # A CPU run's thread count is part of its identity: fix it to what each task gets (Ray
    # gives a task as many threads as CPUs), so that the run a task records is the one found
    # here next time.
    configs = [
        dataclasses.replace(c, threads=max(1, int(cpus)))
        if c.threads is None and resolve_device(c.device).type == "cpu" else c
        for c in configs
    ]
    done: dict[int, Path] = {}
    todo: list[int] = []
    for i, config in enumerate(configs):
        finished = None if rerun else find_finished_run(out, run_id(resolve_settings(config)))
        if finished is not None:
            done[i] = finished
        else:
            todo.append(i)
    failures: list[PointFailure] = []
    if todo:
        started_here = _connect(ray, address, workers)
        try:
            task = ray.remote(_train_point).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
            pending = {task.remote(configs[i], str(out), rerun): i for i in todo}
            say(f"ray: {len(todo)} grid points submitted, {len(done)} already finished")
            started = time.monotonic()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        done[i] = Path(ray.get(ref))
                    except Exception as exc:  # the task's exception, wrapped by Ray
                        failures.append(PointFailure(configs[i], _task_error(exc)))
                total = len(configs)
                say(f"ray: {len(done)}/{total} points finished, {len(failures)} failed, "
                    f"{len(pending)} running or queued ({time.monotonic() - started:.0f} s)")
        finally:
            if started_here:
                ray.shutdown()
    return [done[i] for i in sorted(done)], failures


def _train_point(config: TrainConfig, out: str, rerun: bool) -> str:
    """One grid point, in a Ray worker: exactly what a serial run does for it."""
    return str(train(config, out, rerun=rerun, quiet=True))


def import_ray() -> Any:
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise GradlabError(f"--launcher ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Join the cluster at ``address``, or start a local instance; True when started here."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # Workers import this very gradlab: put its folder on their path.
            here = str(Path(gradlab.__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise GradlabError(f"cannot start or reach {where} ({first_line(exc)}); check --address "
                           "or start one with `ray start --head`") from None
    return True


def _task_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return first_line(cause)
