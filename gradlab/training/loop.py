"""The training loop: one run of one model, with the recorder attached, written to a run store.

``train(config)`` builds the data, the model and the optimiser from a :class:`TrainConfig`,
trains on the GPU when there is one, and writes the run directory incrementally: a run that is
killed keeps everything up to its last flush. Non-finite losses or gradients never end in a
traceback: the step is counted, and the run either stops cleanly with its data saved or skips
that update (``on_nonfinite``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradlab._version import __version__
from gradlab.common import metrics as M
from gradlab.errors import GradlabError
from gradlab.models import build_model, parse_spec
from gradlab.recorder import GradientRecorder
from gradlab.store import RunFinishedError, RunWriter, find_finished_run, read_meta, update_run_meta
from gradlab.training import distributed
from gradlab.training.clipping import parse_clip
from gradlab.training.config import TrainConfig
from gradlab.training.data import load_data
from gradlab.training.device import device_name, resolve_device
from gradlab.training.identity import DEFAULT_OUT, DEFAULT_STEPS, resolve_settings, run_dir_for, run_id
from gradlab.training.optim import make_optimizer, make_scheduler
from gradlab.training.prediction import meanfield_prediction
from gradlab.training.progress import progress as make_progress
from gradlab.training.steplog import StepLog

# The run identity helpers and the mean-field prediction live in their own modules; they stay
# importable from here, where callers have always found them.
__all__ = [
    "DEFAULT_OUT", "DEFAULT_STEPS", "TrainOutcome", "command_line", "meanfield_prediction",
    "resolve_settings", "run_dir_for", "run_id", "train", "train_run",
]

@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train_run` did: where the run lives and whether it was trained now."""

    path: Path
    reused: bool  # a finished run with the same identity was found and nothing was trained
    config: TrainConfig  # the settings as resolved for this machine (steps, threads)


def train(
    config: TrainConfig,
    out: str | Path = DEFAULT_OUT,
    *,
    rerun: bool = False,
    quiet: bool = False,
) -> Path:
    """Train one run and return its directory (an existing finished run is reused).

    Raises :class:`GradlabError` for bad settings before anything is written.
    """
    return train_run(config, out, rerun=rerun, quiet=quiet).path


def train_run(
    config: TrainConfig,
    out: str | Path = DEFAULT_OUT,
    *,
    rerun: bool = False,
    quiet: bool = False,
) -> TrainOutcome:
    """:func:`train`, also saying whether the run was reused and with which resolved settings."""
    config.validate()
    device = resolve_device(config.device)
    config = resolve_settings(config, device)
    path = run_dir_for(config, out)
    finished = None if rerun else find_finished_run(Path(out), run_id(config))
    if finished is not None:
        _fill_meanfield(finished, config)
        return TrainOutcome(finished, True, config)
    _check_writable(Path(out))

    dist_info = distributed.setup(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    threads_before = torch.get_num_threads()
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        trainer = _Trainer(config, device, dist_info)
        writer = None
        if dist_info.is_main:
            try:  # another process may have finished this very run meanwhile: keep it
                writer = RunWriter(path, trainer.meta(), overwrite=rerun)
            except RunFinishedError:
                return TrainOutcome(path, True, config)
        with contextlib.ExitStack() as stack:
            if writer is not None:
                stack.enter_context(writer)
            trainer.run(writer, quiet=quiet)
    finally:
        torch.set_num_threads(threads_before)
        distributed.teardown(dist_info)
    return TrainOutcome(path, False, config)


def _fill_meanfield(run_dir: Path, config: TrainConfig) -> None:
    """Give a reused run recorded before gradlab stored the mean-field prediction its
    prediction, so a report rebuilt from it draws the line too.

    The prediction depends only on the initial weights: the model is rebuilt on the CPU from
    the same spec and seed as the run (the trainer seeds right before building it too).
    """
    meta = read_meta(run_dir)
    data = meta.get("data") or {}
    input_size = data.get("input_size")
    if "meanfield" in meta or not input_size or "num_classes" not in data:
        return
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state as it was
        torch.manual_seed(config.seed)
        model = build_model(config.model, num_classes=int(data["num_classes"]),
                            in_channels=int(input_size[0]))
        prediction = meanfield_prediction(model, tuple(input_size))
    update_run_meta(run_dir, meanfield=prediction)


def _check_writable(out: Path) -> None:
    """Refuse an output directory that cannot be written, without creating anything."""
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GradlabError(f"cannot write to output directory {str(out)!r}: pass a writable --out")


class _Trainer:
    """Everything one run builds, and the loop over its steps."""

    def __init__(self, config: TrainConfig, device: torch.device, dist_info: distributed.DistInfo):
        self.config, self.device, self.dist = config, device, dist_info
        self.model_spec = str(parse_spec(config.model))
        self.clipper = parse_clip(config.clip)
        self.data = load_data(
            config.data,
            data_dir=config.data_dir,
            download=config.download,
            augment=config.augment,
            seed=config.seed,
            train_size=config.train_size,
            eval_size=config.eval_size,
        )
        n_train = len(self.data.train)
        if config.steps is not None:
            self.total_steps = config.steps
        else:
            self.total_steps = max(1, math.ceil(config.epochs * n_train / config.batch_size))

        torch.manual_seed(config.seed)
        model = build_model(
            config.model, num_classes=self.data.num_classes, in_channels=self.data.input_size[0]
        )
        self.model = model.to(device)
        self.clipper.prepare(self.model)
        # Listed once: the clipper skips parameters without a gradient in a step itself.
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.nan = torch.tensor(float("nan"), device=device)
        self._build_optimizer()
        self._build_loaders(n_train)
        self.trained: nn.Module = self.model
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.scaler = None
        if config.amp == "fp16":
            self.scaler = torch.amp.GradScaler(device.type)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.loss_fn = nn.CrossEntropyLoss()
        self.started = time.time()

    def _build_optimizer(self) -> None:
        config = self.config
        self.optimizer = make_optimizer(
            self.model,
            config.optimizer,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        self.scheduler = make_scheduler(
            self.optimizer, config.schedule, self.total_steps, config.warmup_steps
        )

    def _build_loaders(self, n_train: int) -> None:
        config, dist_info = self.config, self.dist
        try:
            sampler = distributed.GlobalBatchSampler(
                n_train, config.batch_size, config.seed, dist_info.rank, dist_info.world_size
            )
        except ValueError as exc:
            raise GradlabError(str(exc)) from None
        self.train_loader = torch.utils.data.DataLoader(self.data.train, batch_sampler=sampler)
        self.eval_loader = torch.utils.data.DataLoader(
            self.data.eval, batch_size=min(config.batch_size, 256), shuffle=False
        )

    # -- metadata ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        config = self.config
        return {
            "name": self.model_spec,
            "run_id": run_id(config),
            "model": self.model_spec,
            "spec": config.to_dict(),
            "seed": config.seed,
            "device": device_name(self.device),
            "world_size": self.dist.world_size,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "gradlab": __version__,
            },
            "git_rev": _git_revision(),
            "num_steps": self.total_steps,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "data": {
                "name": self.data.name,
                "train_size": len(self.data.train),
                "eval_size": len(self.data.eval),
                "num_classes": self.data.num_classes,
                "input_size": list(self.data.input_size),
            },
            "command": command_line(),
            "meanfield": meanfield_prediction(self.model, tuple(self.data.input_size)),
        }

    # -- the loop ---------------------------------------------------------------------------
    def run(self, writer: RunWriter | None, *, quiet: bool) -> None:
        """Train every step, flushing to ``writer`` as it goes (None: record, write nothing).

        A non-finite step ends the run as failed, with its records saved, or is skipped
        (``on_nonfinite``); Ctrl-C flushes the whole steps and marks the run stopped.
        """
        config = self.config
        recorder = GradientRecorder(
            self.model,
            every=config.record_every,
            metrics=None if config.metrics == "default" else "all",
            scaler=self.scaler,  # activation gradients are taken on scaled values under fp16
        )
        progress = make_progress(self.total_steps, self.model_spec,
                                 disable=quiet or not self.dist.is_main)
        log = StepLog(recorder, writer, self.started)
        try:
            with recorder:
                error = self._steps(recorder, log, progress)
            log.flush()
        except KeyboardInterrupt:
            log.flush()
            if writer is not None:
                writer.close("stopped", error="interrupted")
            raise
        finally:
            progress.close()
        if writer is not None:
            writer.update_meta(wall_time_s=round(time.time() - self.started, 3))
            writer.close("failed" if error else "finished", error=error)
        if error and not quiet and self.dist.is_main:
            print(f"warning: {error}", file=sys.stderr)

    def _steps(self, recorder: GradientRecorder, log: StepLog, progress: Any) -> str | None:
        """The loop over the steps; returns why the run stopped early, or None."""
        config = self.config
        batches = iter(self.train_loader)
        for step in range(self.total_steps):
            x, y = next(batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            lr = self.optimizer.param_groups[0]["lr"]
            scalars, bad = self._step(x, y, recorder)
            log.add_scalars(step, scalars)
            log.add(step, M.LR, lr)
            if bad:
                error = self._on_nonfinite(step, log)
                if error is not None:
                    return error
            if self.scaler is not None:
                log.add(step, M.AMP_SCALE, float(self.scaler.get_scale()))
            last = step == self.total_steps - 1
            if (step + 1) % config.eval_every == 0 or last:
                for name, value in self._evaluate().items():
                    log.add(step, name, value)
            log.complete = step
            flush_due = (step + 1) % config.flush_every == 0 or last
            if flush_due or progress.due(1):
                progress.set_postfix(self._postfix(log.pending), refresh=False)
            if flush_due:
                log.flush()
            progress.update(1)
        return None

    def _on_nonfinite(self, step: int, log: StepLog) -> str | None:
        """Count a non-finite step; the error that ends the run, or None where it is skipped."""
        log.nonfinite(step)
        if self.config.on_nonfinite == "stop" and self.scaler is None:
            log.complete = step
            return (f"non-finite loss or gradients at step {step}; the run stopped there with its "
                    "records saved (on_nonfinite='skip' skips such steps)")
        log.skipped_steps += 1
        log.add(step, M.SKIPPED, 1.0)
        return None

    def _step(self, x: torch.Tensor, y: torch.Tensor,
              recorder: GradientRecorder) -> tuple[torch.Tensor, bool]:
        """One optimizer step. Returns the step's scalars (on the device) and whether it was non-finite."""
        self.optimizer.zero_grad(set_to_none=True)
        recorder.set_labels(y)  # for act_grad_cos_class
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            logits = self.trained(x)
            loss = self.loss_fn(logits.float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # the recorder and the clipper see true values
        else:
            loss.backward()
        recorder.step()
        clip = self.clipper.clip(self.params)
        acc = (logits.detach().argmax(1) == y).float().mean()
        finite = torch.isfinite(loss.detach()) & torch.isfinite(clip.norm_before)
        scalars = torch.stack(
            [
                loss.detach().float(),
                acc,
                clip.norm_before.float(),
                clip.norm_after.float(),
                self._norm_threshold(clip.threshold, acc.device),
                torch.as_tensor(clip.fired, dtype=torch.float32, device=acc.device),
                (~finite).float(),
            ]
        )
        # The one host sync of the loop: whether to apply this update at all.
        bad = not bool(finite)
        if self.scaler is not None:
            # GradScaler skips non-finite steps itself and lowers its scale.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not bad:
            self.optimizer.step()
        with warnings.catch_warnings():
            # The schedule follows the step count, skipped steps included; torch warns when the
            # very first optimizer step was the one skipped, which is expected here.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()
        return scalars, bad

    def _norm_threshold(self, threshold, device: torch.device) -> torch.Tensor:
        """The threshold as a global norm, or NaN where the method's threshold is not a norm
        (value clipping's T, AGC's lambda): those are in the run's settings instead."""
        if not getattr(self.clipper, "threshold_is_norm", False):
            return self.nan
        return torch.as_tensor(threshold, dtype=torch.float32, device=device)

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        model = self.model
        was_training = model.training
        model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        for i, (x, y) in enumerate(self.eval_loader):
            if self.config.eval_batches is not None and i >= self.config.eval_batches:
                break
            x, y = x.to(self.device), y.to(self.device)
            logits = model(x).float()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += y.numel()
        model.train(was_training)
        if total == 0:
            return {}
        return {M.EVAL_LOSS: loss_sum / total, M.EVAL_ACC: correct / total}

    @staticmethod
    def _postfix(pending: list[torch.Tensor]) -> dict[str, str]:
        if not pending:
            return {}
        loss, acc = pending[-1][0].item(), pending[-1][1].item()
        return {"loss": f"{loss:.3f}", "acc": f"{acc:.2f}"}


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process, for meta.json, shell-quoted.

    gradlab's own entry points (the ``gradlab`` script wherever it is installed, or
    ``python -m gradlab``) are written as ``gradlab``, so the record reads the same on every
    machine; other programs keep their argv[0] as given.
    """
    args = list(sys.argv if argv is None else argv)
    if args:
        head = Path(args[0])
        if head.name == "gradlab" or (head.name == "__main__.py" and head.parent.name == "gradlab"):
            args[0] = "gradlab"
    return shlex.join(args)


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
