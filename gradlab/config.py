"""The settings of one training run, shared by the CLI, experiment files and the Python API.

Every field is logged in the run's ``meta.json`` and hashed into its identity, so two runs with
the same settings are the same run (``gradlab compare`` reuses a finished one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gradlab.errors import GradlabError

AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
METRIC_SETS = ("default", "all")


@dataclass
class TrainConfig:
    """One run: a model spec and how it is trained and recorded."""

    model: str  # a model-zoo spec, e.g. "plain34" or "resnet56:norm=none"
    data: str = "synthetic"  # synthetic | cifar10 | cifar100 | mnist | fashion-mnist
    data_dir: str | None = None  # where real datasets live (torchvision layout)
    download: bool = False  # let torchvision fetch a missing dataset
    augment: bool = False  # the ResNet paper's CIFAR augmentation: pad 4, random crop, flip
    train_size: int | None = None  # synthetic data: number of training images (None: its default)
    eval_size: int | None = None  # synthetic data: number of held-out images
    optimizer: str = "adam"  # sgd | adam | adamw; Adam trains plain34 and resnet34 apart in 300 CPU steps
    lr: float = 1e-3  # Adam's usual rate; the ResNet paper's SGD recipe is --optimizer sgd --lr 0.1
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 1e-4  # the ResNet paper's CIFAR setting
    schedule: str = "constant"  # constant | step:M1,M2[@F] | cosine
    warmup_steps: int = 0  # linear warm-up before the schedule (ResNet-110 used ~400 at lr 0.01)
    batch_size: int = 64  # global batch: split across processes under DDP
    steps: int | None = None  # optimizer steps; None with epochs None: 300 on a CPU, 2000 on a GPU
    epochs: float | None = None  # alternative to steps, over the training split
    seed: int = 0  # seeds weights, data order and synthetic data: CPU runs repeat exactly
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads for torch (None: torch's count here); part of a CPU run's identity
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler)
    clip: str = "none"  # none | norm:T | value:T | agc:L | autoclip:P | zscore:Z
    on_nonfinite: str = "stop"  # stop: end the run cleanly, data saved; skip: drop that update
    eval_every: int = 25  # evaluate on the held-out split every N steps (and at the end)
    eval_batches: int | None = 8  # held-out batches per evaluation (None: the whole split)
    record_every: int = 4  # recorder schedule: every N-th step (activation statistics cost on a CPU)
    metrics: str = "all"  # recorder metric set: default (norms only) | all (plus activations)
    flush_every: int = 25  # write records to disk every N steps (what a killed run keeps)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form labels (experiment, grid point)

    def validate(self) -> None:
        """Refuse impossible settings with a one-line error, before anything is built."""
        _positive("batch_size", self.batch_size, "--batch-size 64")
        if self.steps is not None:
            _positive("steps", self.steps, "--steps 100")
        if self.epochs is not None and not self.epochs > 0:
            raise GradlabError(f"epochs must be > 0, got {self.epochs}: pass e.g. --epochs 1")
        _positive("eval_every", self.eval_every, "--eval-every 50")
        _positive("record_every", self.record_every, "--record-every 1")
        _positive("flush_every", self.flush_every, "--flush-every 25")
        if self.eval_batches is not None:
            _positive("eval_batches", self.eval_batches, "--eval-batches 8")
        if self.threads is not None:
            _positive("threads", self.threads, "--threads 2")
        if self.warmup_steps < 0:
            raise GradlabError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _choice("amp", self.amp, AMP_MODES)
        _choice("on_nonfinite", self.on_nonfinite, NONFINITE_POLICIES)
        _choice("metrics", self.metrics, METRIC_SETS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that make a run what it is, for its run id.

        ``threads`` enters only once resolved (a CPU run: results differ in the last bits
        between thread counts); left at None it is dropped, so runs recorded before the field
        existed keep their ids.
        """
        values = self.to_dict()
        if values.get("threads") is None:
            values.pop("threads", None)
        return values

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> "TrainConfig":
        """Build from a mapping, refusing unknown keys with the valid ones named."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise GradlabError(
                f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        if "model" not in values:
            raise GradlabError(f"{where}: missing key 'model' (a model spec such as 'resnet20')")
        return cls(**values)


def _positive(name: str, value: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise GradlabError(f"{name} must be a positive integer, got {value!r}: pass e.g. {example}")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise GradlabError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
