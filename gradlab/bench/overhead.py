"""What recording costs: the bare training step against the same step with the recorder attached.

``run_bench(BenchConfig("resnet20"))`` builds one copy of the model per *arm* (the bare step, a
second bare step as an A/A control, the recorder with each metric set and schedule asked for,
and the two common alternatives: a per-parameter ``.item()`` norm loop and a per-parameter
64-bin histogram in the wandb way). Every copy starts from the same seed, trains on the same
batch with the same optimiser class, so the arms differ only in what runs after ``backward()``.

After warm-up the arms take single steps in turn, in an order that rotates from one step to
the next, so that drift in the machine's speed (thermal state, other processes) falls on all of
them alike. Each step is timed on its own, with device synchronisation before and after. A
round is ``steps_per_round`` steps of every arm. A round's figure for an arm is its median step
time; for an arm that records every k-th step it is the mean over the k phases of the schedule
of each phase's median, so the recorded steps count with their true weight while a stray slow
step does not. The ratio to the bare step is taken round by round and summarised by its median
and spread; the ratio of total times (a plain mean, which also carries rare costs such as
periodic copies to the host) is given beside it.

This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradlab.errors import GradlabError, first_line
from gradlab.training.device import resolve_device

AMP_MODES = ("none", "bf16", "fp16")
METRIC_SETS = ("default", "all")
HIST_BINS = 64
BARE, CONTROL, RECORDER, ITEM_LOOP, HISTC = "bare", "control", "gradlab", "item", "histc"


# -- the common alternatives ----------------------------------------------------------------------
def item_norm_loop(params: Iterable[torch.Tensor]) -> list[float]:
    """Per-parameter gradient L2 norms the forum way: a norm and an ``.item()`` (a host sync) each.

    Parameters without a gradient are skipped.
    """
    return [float(p.grad.detach().norm().item()) for p in params if p.grad is not None]


def histc_loop(params: Iterable[torch.Tensor], bins: int = HIST_BINS) -> list[torch.Tensor]:
    """Per-parameter gradient histograms the way wandb's ``watch`` takes them.

    For each gradient: its minimum and maximum read to the host (two syncs), a ``bins``-bin
    ``torch.histc`` over that range, and the counts copied to the host (a third sync).
    """
    out: list[torch.Tensor] = []
    for p in params:
        if p.grad is None:
            continue
        flat = p.grad.detach().reshape(-1).float()
        lo, hi = flat.min().item(), flat.max().item()
        out.append(torch.histc(flat, bins=bins, min=lo, max=hi).cpu())
    return out


# -- statistics -----------------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) with linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    below = math.floor(pos)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (pos - below)


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and range of a sample (e.g. per-round ratios)."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [float(v) for v in values]
        return cls(quantile(vals, 0.5), quantile(vals, 0.25), quantile(vals, 0.75),
                   min(vals, default=math.nan), max(vals, default=math.nan), len(vals))


def round_statistic(times: Sequence[float], phases: Sequence[int], period: int) -> float:
    """One round's step time for an arm whose work repeats every ``period`` steps.

    The mean over the phases of the schedule of each phase's median time: for ``period == 1``
    the plain median; for a recorder that records every k-th step, the recorded phase weighs
    1/k, as it does in training, while one slow step caused by something else is ignored.
    Phases with no step in the round are left out.
    """
    if len(times) != len(phases):
        raise ValueError("times and phases differ in length")
    by_phase: dict[int, list[float]] = {}
    for t, ph in zip(times, phases, strict=True):
        by_phase.setdefault(ph % period, []).append(t)
    if not by_phase:
        return math.nan
    return sum(quantile(v, 0.5) for v in by_phase.values()) / len(by_phase)


# -- memory ---------------------------------------------------------------------------------------
_SKIP_TYPES: tuple[type, ...] = (nn.Module, torch.optim.Optimizer, type, type(sys), RemovableHandle)


def held_bytes(obj: Any, device: torch.device, exclude: Iterable[torch.Tensor] = ()) -> dict[str, int]:
    """Bytes an object (a recorder) holds, walking its attributes, containers and closures.

    Returns ``{"device": ..., "host": ...}``: tensor storage on ``device`` (counted once per
    storage), and everything else (tensors elsewhere, NumPy arrays, pandas frames, Python
    scalars and containers). Modules, optimisers and the tensors in ``exclude`` (the model's
    parameters and gradients) are not the recorder's and are not counted. On a CPU run the
    device is the host: its buffers then count as ``device``.
    """
    import numpy as np

    skip_ptrs = set()
    for t in exclude:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            skip_ptrs.add(t.untyped_storage().data_ptr())
    seen: set[int] = set()
    storages: set[tuple[str, int]] = set()
    totals = {"device": 0, "host": 0}
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if isinstance(item, nn.Parameter) or item.device.type == "meta":
                continue
            storage = item.untyped_storage()
            key = (str(item.device), storage.data_ptr())
            if storage.data_ptr() in skip_ptrs or key in storages:
                continue
            storages.add(key)
            same = item.device.type == device.type and (
                device.index is None or item.device.index in (None, device.index))
            totals["device" if same else "host"] += storage.nbytes()
            continue
        if isinstance(item, np.ndarray):
            if item.base is None:
                totals["host"] += item.nbytes
            else:
                stack.append(item.base)  # a view: count the array it views, once
            if item.dtype == object:
                stack.extend(item.ravel().tolist())
            continue
        if isinstance(item, _SKIP_TYPES):
            continue
        module = type(item).__module__
        if module.startswith("pandas"):
            if hasattr(item, "memory_usage"):
                usage = item.memory_usage(deep=True)
                totals["host"] += int(usage.sum() if hasattr(usage, "sum") else usage)
            continue
        totals["host"] += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset, deque)):
            stack.extend(item)
        elif hasattr(item, "__self__") and hasattr(item, "__func__"):  # a bound method (a hook)
            stack.append(item.__self__)
        elif callable(item) and hasattr(item, "__closure__"):  # a closure (a hook)
            for cell in item.__closure__ or ():
                with contextlib.suppress(ValueError):
                    stack.append(cell.cell_contents)
        else:  # any other object: what its attributes hold
            stack.extend(vars(item).values() if hasattr(item, "__dict__") else ())
            for slot in getattr(type(item), "__slots__", ()):
                stack.append(getattr(item, slot, None))
    return totals


# -- configuration and results --------------------------------------------------------------------
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


# -- the arms -------------------------------------------------------------------------------------
class _Arm:
    """A model, its optimiser, and what runs after ``backward()``: one thing being timed."""

    def __init__(self, name: str, kind: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 trained: nn.Module, metrics: str | None = None, every: int = 1) -> None:
        self.name, self.kind, self.metrics, self.every = name, kind, metrics, every
        self.model, self.optimizer, self.trained = model, optimizer, trained
        self.recorder: Any = None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.after_backward: Callable[[], Any] = lambda: None
        self.last: Any = None  # what an alternative produced, kept like a logger keeps it
        self.count = 0
        self.times: list[float] = []
        self.phases: list[int] = []
        self.rounds: list[float] = []
        self.compiler = {"graph_breaks": 0, "unique_graphs": 0, "graphs_while_timed": 0}
        self.scaler: torch.amp.GradScaler | None = None

    @property
    def period(self) -> int:
        return self.every if self.kind == RECORDER else 1


def _check(config: BenchConfig) -> None:
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


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _graph_counters() -> tuple[int, int]:
    """(graph breaks, unique graphs) counted by dynamo so far in this process."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # pragma: no cover - a torch without dynamo
        return 0, 0
    return sum(counters["graph_break"].values()), int(counters["stats"].get("unique_graphs", 0))


class _Bench:
    """The arms and the loop that times them."""

    def __init__(self, config: BenchConfig, progress: Callable[[str], None]) -> None:
        from gradlab.models import build_model, native_input_size

        self.config, self.progress = config, progress
        self.device = resolve_device(config.device)
        self.sync = _sync(self.device)
        channels, height, width = native_input_size(config.spec)
        if config.input_size is not None:
            height = width = config.input_size
        self.input_shape = (config.batch_size, channels, height, width)
        from gradlab.training.preflight import check_model_fits

        # Before anything is allocated: a model too large is one line with its size.
        check_model_fits(config.spec, config.batch_size, (channels, height, width),
                         config.num_classes, self.device.type)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.loss_fn = nn.CrossEntropyLoss()
        self._build_model = lambda: build_model(config.spec, num_classes=config.num_classes)
        self.num_classes = self._probe_classes(channels, height, width)
        gen = torch.Generator().manual_seed(config.seed)
        self.x = torch.randn(self.input_shape, generator=gen).to(self.device)
        self.y = torch.randint(0, self.num_classes, (config.batch_size,), generator=gen).to(self.device)
        self.arms: list[_Arm] = []

    def _probe_classes(self, channels: int, height: int, width: int) -> int:
        """Run the model once on the host: it must accept the input, and says how many classes it has."""
        probe = self._build_model().eval()
        try:
            with torch.no_grad():
                out = probe(torch.zeros(2, channels, height, width))
        except RuntimeError as exc:
            first = first_line(exc)
            raise GradlabError(
                f"{self.config.spec} does not take input {channels}x{height}x{width}: {first[:160]} "
                f"(pick another --input-size)"
            ) from None
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise GradlabError(f"{self.config.spec} does not output (batch, classes) logits: bench a classifier")
        return int(out.shape[1])

    # Every arm gets its own copy of the model built from the same seed: the recorder attaches
    # hooks and keeps state, so sharing one model between arms would let one arm's hooks or
    # state leak into another's timings.
    def _arm(self, name: str, kind: str, metrics: str | None = None, every: int = 1) -> _Arm:
        torch.manual_seed(self.config.seed)
        model = self._build_model().to(self.device).train()
        if self.config.compile:
            _own_classes(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=self.config.lr, momentum=0.9)
        arm = _Arm(name, kind, model, optimizer, model, metrics, every)
        arm.scaler = torch.amp.GradScaler(self.device.type) if self.config.amp == "fp16" else None
        return arm

    def build(self) -> None:
        cfg = self.config
        self.arms.append(self._arm("bare", BARE))
        if cfg.control:
            self.arms.append(self._arm("bare again (A/A control)", CONTROL))
        from gradlab.recorder import GradientRecorder

        for metrics, every in cfg.recorder_pairs():
            arm = self._arm(f"gradlab {metrics}, every {every}", RECORDER, metrics, every)
            arm.recorder = GradientRecorder(arm.model, every=every,
                                            metrics=None if metrics == "default" else metrics)
            arm.after_backward = arm.recorder.step
            self.arms.append(arm)
        if cfg.alternatives:
            item = self._arm(".item() norm per parameter", ITEM_LOOP)
            item.after_backward = lambda a=item: setattr(a, "last", item_norm_loop(a.params))
            hist = self._arm(f"histc {HIST_BINS} bins per parameter (wandb-like)", HISTC)
            hist.after_backward = lambda a=hist: setattr(a, "last", histc_loop(a.params))
            self.arms += [item, hist]
        if cfg.compile:
            for arm in self.arms:
                arm.trained = torch.compile(arm.model)

    def step(self, arm: _Arm) -> None:
        arm.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        with autocast:
            loss = self.loss_fn(arm.trained(self.x).float(), self.y)
        if arm.scaler is not None:
            arm.scaler.scale(loss).backward()
            arm.scaler.unscale_(arm.optimizer)  # recorder and alternatives see true values
        else:
            loss.backward()
        arm.after_backward()
        if arm.scaler is not None:
            arm.scaler.step(arm.optimizer)
            arm.scaler.update()
        else:
            arm.optimizer.step()
        arm.count += 1

    def _counted(self, arm: _Arm, body: Callable[[], None], timed: bool = False) -> None:
        breaks, graphs = _graph_counters()
        body()
        breaks2, graphs2 = _graph_counters()
        arm.compiler["graph_breaks"] += breaks2 - breaks
        arm.compiler["unique_graphs"] += graphs2 - graphs
        if timed:  # a graph compiled inside a timed step makes that step's time meaningless
            arm.compiler["graphs_while_timed"] += graphs2 - graphs

    def warm_up(self) -> None:
        for arm in self.arms:
            def body(arm: _Arm = arm) -> None:
                for _ in range(max(self.config.warmup, 1 if self.config.compile else 0)):
                    self.step(arm)
                self.sync()

            try:
                self._counted(arm, body)
            except RuntimeError as exc:
                first = first_line(exc)
                raise GradlabError(
                    f"{self.config.spec} failed a training step on input "
                    f"{'x'.join(map(str, self.input_shape))}: {first[:200]} (check --input-size and --batch-size)"
                ) from None

    def time_rounds(self) -> tuple[int, int]:
        """The timed rounds. Within a round the arms take single steps in turn (a rotating
        order), so that every arm's steps fall in the same stretch of time; a round ends when
        each arm has taken ``steps_per_round`` steps."""
        cfg = self.config
        per_round = steps_per_round(cfg)
        start = time.perf_counter()
        n = len(self.arms)
        rounds = 0
        gc_was_enabled = gc.isenabled()
        try:
            for r in range(cfg.repeats):
                gc.collect()
                gc.disable()  # a collection inside a timed step would be charged to one arm
                times: list[list[float]] = [[] for _ in self.arms]
                phases: list[list[int]] = [[] for _ in self.arms]
                for s in range(per_round):
                    k = (r * per_round + s) % n
                    for i in list(range(k, n)) + list(range(k)):
                        arm = self.arms[i]
                        phases[i].append(arm.count % arm.period)
                        if cfg.compile:
                            self._counted(arm, lambda arm=arm, i=i: times[i].append(self._timed_step(arm)),  # noqa: B023 (called at once)
                                          timed=True)
                        else:
                            times[i].append(self._timed_step(arm))
                gc.enable()
                for arm, t, ph in zip(self.arms, times, phases, strict=True):
                    arm.times += t
                    arm.phases += ph
                    arm.rounds.append(round_statistic(t, ph, arm.period))
                rounds += 1
                self.progress(f"round {rounds}/{cfg.repeats} ({time.perf_counter() - start:.0f} s)")
                if cfg.max_seconds is not None and rounds >= 2 and time.perf_counter() - start > cfg.max_seconds:
                    break
        finally:
            if gc_was_enabled:
                gc.enable()
        return rounds, per_round

    def _timed_step(self, arm: _Arm) -> float:
        """One step in milliseconds, the device idle before it starts and after it ends."""
        self.sync()
        t0 = time.perf_counter_ns()
        self.step(arm)
        self.sync()
        return (time.perf_counter_ns() - t0) / 1e6

    # -- after the timed rounds (untimed) --
    def recorder_memory(self, arm: _Arm) -> dict[str, Any]:
        """What the recorder holds: its device buffers, and host bytes per recorded value.

        Bytes are counted by walking the recorder's objects (``held_bytes``), independently of
        the figures the recorder reports about itself (given beside them when it has them).
        Host bytes per value are the growth of everything it holds over extra recorded steps,
        divided by the growth of the values it returns, so fixed costs do not count.
        """
        rec = arm.recorder
        exclude = list(arm.model.parameters()) + list(arm.model.buffers())
        exclude += [p.grad for p in arm.model.parameters() if p.grad is not None]
        first = recorded_values(rec)
        before = held_bytes(rec, self.device, exclude)
        own_before = getattr(rec, "host_bytes", None)
        # 16 recorded steps (2 for a sparse schedule, whose steps are the same but many more).
        extra = (16 if arm.every == 1 else 2) * arm.every
        for _ in range(extra):
            self.step(arm)
        self.sync()
        second = recorded_values(rec)
        after = held_bytes(rec, self.device, exclude)
        grown = second - first
        total = lambda h: h["device"] + h["host"]  # noqa: E731
        memory: dict[str, Any] = {
            "device_bytes": after["device"],
            "host_bytes": after["host"],
            "values_held": second,
            "host_bytes_per_value": (total(after) - total(before)) / grown if grown > 0 else math.nan,
        }
        if own_before is not None:
            memory["reported_device_bytes"] = int(rec.device_bytes)
            memory["reported_host_bytes_per_value"] = (
                (rec.host_bytes - own_before) / grown if grown > 0 else math.nan)
        return memory

    def peak_memory(self) -> dict[str, int]:
        """Peak CUDA memory above the resident state over one schedule period, per arm."""
        peaks: dict[str, int] = {}
        if self.device.type != "cuda":
            return peaks
        for arm in self.arms:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            for _ in range(arm.period):
                self.step(arm)
            self.sync()
            peaks[arm.name] = torch.cuda.max_memory_allocated(self.device) - base
        return peaks

    def explain_forward(self) -> dict[str, Any]:
        """Graph breaks in the forward pass seen by dynamo, bare model against each recorder arm.

        ``torch._dynamo.explain`` resets dynamo's caches, so this runs after the timing.
        """
        out: dict[str, Any] = {}
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        for arm in self.arms:
            if arm.kind not in (BARE, RECORDER):
                continue
            try:
                with autocast:
                    report = torch._dynamo.explain(arm.model)(self.x)
            except Exception as exc:  # a diagnostic: report it rather than lose the timings
                out[arm.name] = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
                continue
            out[arm.name] = {
                "graph_count": report.graph_count,
                "graph_break_count": report.graph_break_count,
                "break_reasons": [str(getattr(b, "reason", b)).splitlines()[0] for b in report.break_reasons][:5],
            }
            arm.model.zero_grad(set_to_none=True)
        bare = out.get("bare", {}).get("graph_break_count")
        out["caused_by_gradlab"] = {
            k: (v["graph_break_count"] - bare if bare is not None and "graph_break_count" in v else None)
            for k, v in out.items() if k != "bare"
        }
        return out


def _own_classes(model: nn.Module) -> None:
    """Give every module of ``model`` a class of its own (a subclass with the same name).

    dynamo shares compiled code between instances of one class and, by default, does not
    guard on module hooks, so a second copy of a model would silently run the graph traced
    for the first one: the recorder arm would run the bare arm's graph without its hooks, or
    another recorder's hooks. Classes of its own give each arm its own compiled graphs, each
    traced with the arm's own hooks.
    """
    made: dict[type, type] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in made:
            made[cls] = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        module.__class__ = made[cls]


def recorded_values(recorder: Any) -> int:
    """Values a recorder returns: rows of its layer frame plus rows of its step frame."""
    n = len(recorder.to_frame())
    if hasattr(recorder, "step_frame"):
        n += len(recorder.step_frame())
    return n


def environment(device: torch.device) -> dict[str, Any]:
    """The versions and machine a measurement ran on."""
    from gradlab._version import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "gradlab": __version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "load_avg_start": list(load),
        "recorder_source": _recorder_source_hash(),
    }


def _recorder_source_hash() -> str | None:
    """A short hash of the recorder's source files: which version of it a figure belongs to."""
    import hashlib

    try:
        import gradlab.recorder as recorder_pkg

        folder = Path(recorder_pkg.__file__).parent
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:12]
    except (ImportError, OSError):
        return None


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Time the bare step against the recorder and the alternatives, interleaved in this process."""
    _check(config)
    progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    bench = _Bench(config, progress)
    env = environment(bench.device)
    env["input"] = list(bench.input_shape)
    bench.build()
    progress(f"warming up {len(bench.arms)} arms x {max(config.warmup, 1 if config.compile else 0)} steps")
    bench.warm_up()
    rounds, per_round = bench.time_rounds()
    env["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    bare = bench.arms[0]
    total_bare = sum(bare.times)
    results: list[ArmResult] = []
    peaks = bench.peak_memory()
    for arm in bench.arms:
        ratios = [a / b for a, b in zip(arm.rounds, bare.rounds, strict=True)]
        res = ArmResult(
            name=arm.name, kind=arm.kind, metrics=arm.metrics, every=arm.every,
            step_ms=quantile(arm.rounds, 0.5), ratio=Spread.of(ratios),
            mean_ratio=sum(arm.times) / total_bare, round_ms=list(arm.rounds),
        )
        if arm.recorder is not None:
            holder: dict[str, Any] = {}
            bench._counted(arm, lambda arm=arm: holder.update(bench.recorder_memory(arm)))  # noqa: B023 (called at once)
            res.memory = holder
            res.records = res.memory["values_held"]
        if arm.name in peaks:
            res.memory = dict(res.memory or {})
            res.memory["peak_extra_bytes"] = peaks[arm.name] - peaks[bare.name]
        if config.compile:
            res.compiler = dict(arm.compiler)
        res.steps_run = arm.count
        results.append(res)
    graph = bench.explain_forward() if config.compile else None
    for arm in bench.arms:
        if arm.recorder is not None:
            arm.recorder.remove()
    return BenchResult(config=asdict(config), environment=env, arms=results, rounds=rounds,
                       steps_per_round=per_round, elapsed_s=time.perf_counter() - started,
                       graph_breaks=graph)


# -- the data path: to_frame() at scale ------------------------------------------------------------
def _rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def _peak_rss(interval_s: float = 0.002):
    """Samples resident memory from a thread while the block runs; yields a dict that gets ``peak``."""
    import threading

    out = {"before": _rss_bytes(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], _rss_bytes())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak"] = max(out["peak"], _rss_bytes())


def frame_scale(values: int = 10_000_000, layers: int = 500, progress: Callable[[str], None] | None = None
                ) -> dict[str, Any]:
    """Record ``values`` values through the public recorder API, then time ``to_frame()``.

    The model is a stack of ``layers`` tiny ``Linear(4, 4)`` layers recorded with the default
    metrics (3 values per layer and 1 per step), so that millions of values take minutes, not
    hours. Reported: recording time, the recorder's host bytes per value, and for
    ``to_frame()`` and ``step_frame()`` the wall time, the frame's size, and the peak resident
    memory above the memory held just before the call (sampled every 2 ms).
    """
    from gradlab.recorder import GradientRecorder

    progress = progress or (lambda _m: None)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(layers)])
    x = torch.randn(8, 4)
    rec = GradientRecorder(model)

    def one_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        rec.step()

    one_step()
    per_step = recorded_values(rec)
    steps = max(1, math.ceil(values / per_step))
    t0 = time.perf_counter()
    for i in range(1, steps):
        one_step()
        if i % 1000 == 0:
            progress(f"{i}/{steps} steps recorded ({time.perf_counter() - t0:.0f} s)")
    record_s = time.perf_counter() - t0
    gc.collect()
    host_bytes = int(getattr(rec, "host_bytes", 0))
    t0 = time.perf_counter()
    with _peak_rss() as mem:
        frame = rec.to_frame()
    frame_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _peak_rss() as step_mem:
        steps_frame = rec.step_frame()
    step_s = time.perf_counter() - t0
    n = len(frame) + len(steps_frame)
    shallow = int(frame.memory_usage(deep=False).sum())
    result = {
        "layers": layers, "steps": steps, "values": n, "per_step": per_step,
        "record_s": record_s, "record_ms_per_step": 1e3 * record_s / max(steps - 1, 1),
        "recorder_host_bytes": host_bytes, "host_bytes_per_value": host_bytes / n if n else math.nan,
        "to_frame_s": frame_s, "to_frame_rows": len(frame),
        "frame_bytes_shallow": shallow,
        "rss_before_to_frame": mem["before"], "to_frame_peak_above_before": mem["peak"] - mem["before"],
        "step_frame_s": step_s, "step_frame_rows": len(steps_frame),
        "step_frame_peak_above_before": step_mem["peak"] - step_mem["before"],
    }
    rec.remove()
    return result


def _frame_main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gradlab.bench.overhead",
                                     description="Time GradientRecorder.to_frame() on many recorded values.")
    parser.add_argument("--values", type=int, default=10_000_000)
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--json", default=None, help="Also write the figures here.")
    args = parser.parse_args(argv)
    result = frame_scale(args.values, args.layers, progress=lambda m: print(m, file=sys.stderr, flush=True))
    mib = 2**20
    print(f"{result['values']:,} values ({result['layers']} layers x {result['steps']:,} steps), "
          f"recorded in {result['record_s']:.0f} s ({result['record_ms_per_step']:.2f} ms per step)")
    print(f"recorder host memory: {result['recorder_host_bytes'] / mib:.1f} MiB, "
          f"{result['host_bytes_per_value']:.2f} B per value")
    print(f"to_frame(): {result['to_frame_s']:.2f} s, {result['to_frame_rows']:,} rows, frame "
          f"{result['frame_bytes_shallow'] / mib:.0f} MiB (columns, shallow), peak resident memory "
          f"{result['to_frame_peak_above_before'] / mib:.0f} MiB above the "
          f"{result['rss_before_to_frame'] / mib:.0f} MiB before")
    print(f"step_frame(): {result['step_frame_s']:.3f} s, {result['step_frame_rows']:,} rows")
    if args.json:
        write_json(result, args.json)
    return 0


# -- output ---------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically (a temporary file renamed into place): never half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_json(result: BenchResult | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a result (or any dict of figures) as JSON, atomically; NaN becomes null."""
    import json

    data = result.to_dict() if isinstance(result, BenchResult) else result
    return write_text(path, json.dumps(_plain(data), indent=1) + "\n")


def _bytes(n: float) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def format_bench(result: BenchResult) -> str:
    """A plain-text table of the result, as the CLI prints it."""
    cfg, env = result.config, result.environment
    lines = [
        f"gradlab bench {cfg['spec']}: batch {cfg['batch_size']}, input {'x'.join(map(str, env['input'][1:]))}, "
        f"amp {cfg['amp']}{', compiled' if cfg['compile'] else ''}",
        f"device {env['device']} ({env['threads']} threads), torch {env['torch']}, {env['date']}; "
        f"load average {env['load_avg_start'][0]:.2f} -> {(env.get('load_avg_end') or [math.nan])[0]:.2f}",
        f"recorder source {env.get('recorder_source')}; "
        f"{result.rounds} rounds x {result.steps_per_round} timed steps per arm, interleaved; "
        f"warm-up {cfg['warmup']} steps; {result.elapsed_s:.0f} s in all",
        "",
    ]
    header = f"{'arm':<44} {'step ms':>9} {'ratio':>7} {'IQR':>13} {'min-max':>13} {'mean':>7}"
    lines += [header, "-" * len(header)]
    for arm in result.arms:
        r = arm.ratio
        lines.append(
            f"{arm.name:<44} {arm.step_ms:>9.2f} {r.median:>7.3f} {r.q1:>6.3f}-{r.q3:<6.3f} "
            f"{r.lo:>6.3f}-{r.hi:<6.3f} {arm.mean_ratio:>7.3f}"
        )
    lines += ["",
              "ratio: median over rounds of (arm / bare) round figures; IQR and min-max: their spread; "
              "mean: total time / total bare time."]
    control = next((a for a in result.arms if a.kind == CONTROL), None)
    if control is not None:
        lines.append(f"noise floor: the A/A control reads {control.ratio.median:.3f} "
                     f"(IQR {control.ratio.q1:.3f}-{control.ratio.q3:.3f}); differences smaller than that are noise.")
    for arm in result.arms:
        mem = arm.memory
        if not mem:
            continue
        parts = []
        if "device_bytes" in mem:
            parts.append(f"device buffers {_bytes(mem['device_bytes'])}, host {_bytes(mem['host_bytes'])} "
                         f"holding {mem['values_held']} values, "
                         f"{mem['host_bytes_per_value']:.1f} B per recorded value")
        if "peak_extra_bytes" in mem and arm.kind != BARE:
            parts.append(f"peak device memory {_bytes(mem['peak_extra_bytes'])} above bare")
        if parts:
            lines.append(f"memory, {arm.name}: " + "; ".join(parts))
    if result.graph_breaks:
        caused = result.graph_breaks.get("caused_by_gradlab", {})
        for name, n in caused.items():
            lines.append(f"compiled forward, {name}: {n} graph break(s) beyond the bare model's")
    for arm in result.arms:
        if arm.compiler:
            lines.append(f"dynamo, {arm.name}: {arm.compiler['graph_breaks']} graph breaks, "
                         f"{arm.compiler['unique_graphs']} graphs compiled "
                         f"({arm.compiler['graphs_while_timed']} of them during timed steps)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(_frame_main())
