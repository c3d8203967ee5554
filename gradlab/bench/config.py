"""What a benchmark times and what it found: its configuration and results.

:class:`BenchConfig` says what to time; :func:`check_config` refuses bad settings with one line
naming the option to fix, before anything is built; :class:`ArmResult` and :class:`BenchResult`
hold what was measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from gradlab.bench.stats import Spread
from gradlab.errors import GradlabError

AMP_MODES = ("none", "bf16", "fp16")
METRIC_SETS = ("default", "all")
#: The kinds of arm: the bare step, its A/A control, the recorder and the two alternatives.
BARE, CONTROL, RECORDER, ITEM_LOOP, HISTC = "bare", "control", "gradlab", "item", "histc"


@dataclass
class BenchConfig:
    """What to time. The fields other than ``lr`` and ``recorder_arms`` are CLI options of the same name."""

    spec: str  # model zoo spec, e.g. "resnet34" or "tv:resnet50"
    batch_size: int = 64
    input_size: int | None = None  # side of the square input; None: the model's own
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: str = "none"  # none, bf16 (autocast), fp16 (autocast + GradScaler)
    metrics: tuple[str, ...] = ("default",)  # recorder metric sets, one arm each (x every)
    every: tuple[int, ...] = (1,)  # recording schedules, one arm each (x metrics)
    repeats: int = 20  # rounds; every arm runs steps_per_round timed steps per round
    steps_per_round: int | None = None  # None: 10, or the least common multiple of `every` above 10
    warmup: int = 10  # untimed steps per arm before the first round (compilation happens here)
    compile: bool = False  # train through torch.compile(model)
    alternatives: bool = True  # also time the .item() loop and the wandb-like histogram
    control: bool = True  # a second bare arm: its ratio to the first is the noise floor
    seed: int = 0
    lr: float = 1e-3  # small, so that hours of random-label steps stay finite
    num_classes: int | None = None  # None: the model's default
    max_seconds: float | None = None  # stop after the round that passes this (at least 2 rounds)
    recorder_arms: tuple[tuple[str, int], ...] | None = None  # (metric set, every) pairs; None: metrics x every

    def recorder_pairs(self) -> list[tuple[str, int]]:
        """The recorder arms to time: ``recorder_arms``, or every metric set with every schedule."""
        if self.recorder_arms is not None:
            return [(str(m), e) for m, e in self.recorder_arms]
        return [(m, e) for m in self.metrics for e in self.every]


@dataclass
class ArmResult:
    """One arm's figures. Ratios are to the bare arm, round by round."""

    name: str
    kind: str
    metrics: str | None
    every: int
    step_ms: float  # median over rounds of the round statistic
    ratio: Spread  # per-round ratios to the bare step
    mean_ratio: float  # total time / total bare time over the same number of steps
    round_ms: list[float] = field(default_factory=list)
    records: int | None = None  # values the recorder returned at the end (layer + step frames)
    steps_run: int = 0  # optimizer steps this arm's model took in all (warm-up and extras included)
    memory: dict[str, Any] | None = None
    compiler: dict[str, Any] | None = None


@dataclass
class BenchResult:
    """Everything ``run_bench`` measured, with the environment it ran in."""

    config: dict[str, Any]
    environment: dict[str, Any]
    arms: list[ArmResult]
    rounds: int
    steps_per_round: int
    elapsed_s: float
    graph_breaks: dict[str, Any] | None = None

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(config: BenchConfig) -> None:
    """Refuse bad settings with a one-line :class:`GradlabError` naming the option to fix."""

    def positive(value: Any, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GradlabError(f"{what} must be a positive integer, got {value!r}")

    positive(config.batch_size, "--batch-size")
    positive(config.repeats, "--repeats")
    if config.repeats < 2:
        raise GradlabError("--repeats must be at least 2: the spread needs several rounds")
    if config.input_size is not None:
        positive(config.input_size, "--input-size")
    if isinstance(config.warmup, bool) or not isinstance(config.warmup, int) or config.warmup < 0:
        raise GradlabError(f"--warmup must be 0 or more, got {config.warmup!r}")
    if config.amp not in AMP_MODES:
        raise GradlabError(f"unknown --amp {config.amp!r}: choose from {', '.join(AMP_MODES)}")
    pairs = config.recorder_pairs()
    for m, e in pairs:
        if m not in METRIC_SETS:
            raise GradlabError(f"unknown --metrics {m!r}: choose from {', '.join(METRIC_SETS)}")
        positive(e, "--every")
    if config.steps_per_round is not None:
        positive(config.steps_per_round, "--steps-per-round")
        period = math.lcm(*(e for _, e in pairs)) if pairs else 1
        if config.steps_per_round % period:
            raise GradlabError(
                f"--steps-per-round {config.steps_per_round} is not a multiple of every --every: "
                f"use {period * max(1, round(config.steps_per_round / period))}"
            )
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise GradlabError(f"learning rate must be a positive number, got {config.lr}")


def steps_per_round(config: BenchConfig) -> int:
    """Timed steps per arm and round: a multiple of every schedule, so rounds hold whole periods."""
    if config.steps_per_round is not None:
        return config.steps_per_round
    everys = [e for _, e in config.recorder_pairs()]
    period = math.lcm(*everys) if everys else 1
    return period * math.ceil(10 / period)

