"""The settings of one training run, shared by the CLI, experiment files and the Python API.

Every field is logged in the run's ``meta.json`` and hashed into its identity, so two runs with
the same settings are the same run (``gradlab compare`` reuses a finished one).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gradlab.errors import GradlabError

AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
METRIC_SETS = ("default", "all")

#: Upper bounds on counts: far beyond any real run, low enough that a typo such as
#: ``--steps 1e23`` (or an extra zero or six) is refused instead of running for ever.
MAX_STEPS = 10**9
MAX_BATCH = 2**20
MAX_IMAGES = 10**9
MAX_SEED = 2**63 - 1
MAX_THREADS = 4096


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
        """Refuse impossible settings with a one-line error, before anything is built.

        Every number is checked for its type and range (counts up to generous maxima, rates
        finite), and the training length is given at most one way: steps or epochs, not both
        (neither: a length sized for the device, see ``gradlab.training.identity.DEFAULT_STEPS``).
        """
        self._validate_length()
        for name, high, example, optional in _COUNTS:
            value = getattr(self, name)
            if not (optional and value is None):
                _positive(name, value, example, high)
        self._validate_ranges()
        for name in _STRINGS:
            if not isinstance(getattr(self, name), str):
                raise GradlabError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise GradlabError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise GradlabError(f"data_dir must be a path (a string), got {self.data_dir!r}")
        if not isinstance(self.extra, dict):
            raise GradlabError(f"extra must be a table of labels, got {self.extra!r}")
        for name, valid in _CHOICES:
            _choice(name, getattr(self, name), valid)

    def _validate_length(self) -> None:
        """The batch, and the training length given at most one way."""
        _positive("batch_size", self.batch_size, "--batch-size 64", MAX_BATCH)
        if self.steps is not None and self.epochs is not None:
            raise GradlabError(f"give the training length once: steps ({self.steps}) or epochs "
                               f"({self.epochs}), not both; drop one of them (in Python: steps=None)")
        if self.steps is not None:
            _positive("steps", self.steps, "--steps 100", MAX_STEPS)
        if self.epochs is not None:
            _number("epochs", self.epochs, "--epochs 1", low=0.0, high=1e6)

    def _validate_ranges(self) -> None:
        """Counts that may be 0, the seed, and the rates."""
        if not _is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= MAX_STEPS:
            raise GradlabError(f"warmup_steps must be a whole number from 0 to {MAX_STEPS}, got "
                               f"{self.warmup_steps!r}: pass e.g. --warmup-steps 0")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise GradlabError(f"seed must be a whole number from 0 to 2**63-1, got {self.seed!r}: "
                               "pass e.g. --seed 0")
        # No upper bound on rates: a huge one is how an explosion is studied on purpose.
        _number("lr", self.lr, "--lr 0.1", low=0.0, high=math.inf)
        _number("momentum", self.momentum, "--momentum 0.9", low=0.0, high=1.0, closed=True)
        _number("weight_decay", self.weight_decay, "--weight-decay 1e-4", low=0.0, high=math.inf,
                closed=True)

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
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> TrainConfig:
        """Build from a mapping, refusing unknown keys with the valid ones named."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise GradlabError(
                f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        if "model" not in values:
            raise GradlabError(f"{where}: missing key 'model' (a model spec such as 'resnet20')")
        if values.get("epochs") is not None and "steps" not in values:
            values = {**values, "steps": None}  # epochs given alone replace the default steps
        return cls(**values)


#: Whole-number settings checked by :meth:`TrainConfig.validate`, in order: (field, upper
#: bound, an example for the message, whether None is allowed, meaning "the default").
_COUNTS: tuple[tuple[str, int, str, bool], ...] = (
    ("eval_every", MAX_STEPS, "--eval-every 50", False),
    ("record_every", MAX_STEPS, "--record-every 1", False),
    ("flush_every", MAX_STEPS, "--flush-every 25", False),
    ("eval_batches", MAX_STEPS, "--eval-batches 8", True),
    ("threads", MAX_THREADS, "--threads 2", True),
    ("train_size", MAX_IMAGES, "--train-size 1000", True),
    ("eval_size", MAX_IMAGES, "eval_size = 1000 (in an experiment file)", True),  # no CLI option
)
_STRINGS = ("model", "data", "optimizer", "schedule", "device", "amp", "clip", "on_nonfinite", "metrics")
_FLAGS = ("download", "augment", "nesterov")
_CHOICES = (("amp", AMP_MODES), ("on_nonfinite", NONFINITE_POLICIES), ("metrics", METRIC_SETS))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value: int, example: str, high: int) -> None:
    if not _is_int(value) or not 0 < value <= high:
        raise GradlabError(f"{name} must be a whole number from 1 to {high:,}, got "
                           f"{_short(value)}: pass e.g. {example}")


def _number(name: str, value: float, example: str, *, low: float, high: float,
            closed: bool = False) -> None:
    """A finite real number in (low, high], or [low, high] when ``closed``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low <= value if closed else low < value) and value <= high
    if not ok:
        bounds = f"{'[' if closed else '('}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
        if not math.isfinite(high):
            bounds = ("a finite number >= " if closed else "a finite number > ") + f"{low:g}"
            raise GradlabError(f"{name} must be {bounds}, got {_short(value)}: pass e.g. {example}")
        raise GradlabError(f"{name} must be a number in {bounds}, got {_short(value)}: pass e.g. "
                           f"{example}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise GradlabError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
