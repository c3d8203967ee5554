"""The timing loop: the bare training step against the same step with the recorder attached.

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
import functools
import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from gradlab.bench.alternatives import HIST_BINS, histc_loop, item_norm_loop
from gradlab.bench.arms import Arm, device_sync, graph_counters, keeping, own_classes, recorded_values
from gradlab.bench.config import (
    BARE,
    CONTROL,
    HISTC,
    ITEM_LOOP,
    RECORDER,
    ArmResult,
    BenchConfig,
    BenchResult,
    check_config,
    steps_per_round,
)
from gradlab.bench.environment import environment
from gradlab.bench.memory import held_bytes
from gradlab.bench.stats import Spread, quantile, round_statistic
from gradlab.errors import GradlabError, first_line
from gradlab.models import build_model, native_input_size
from gradlab.recorder import GradientRecorder
from gradlab.training.device import resolve_device
from gradlab.training.preflight import check_model_fits


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Time the bare step against the recorder and the alternatives, interleaved in this process."""
    check_config(config)
    progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    bench = Bench(config, progress)
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
            bench._counted(arm, functools.partial(_update, holder, bench.recorder_memory, arm))
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


def _update(holder: dict[str, Any], measure: Callable[[Arm], dict[str, Any]], arm: Arm) -> None:
    """Fill ``holder`` with what ``measure`` finds for ``arm`` (run inside dynamo's counters)."""
    holder.update(measure(arm))


class Bench:
    """The arms and the loop that times them."""

    def __init__(self, config: BenchConfig, progress: Callable[[str], None]) -> None:
        self.config, self.progress = config, progress
        self.device = resolve_device(config.device)
        self.sync = device_sync(self.device)
        channels, height, width = native_input_size(config.spec)
        if config.input_size is not None:
            height = width = config.input_size
        self.input_shape = (config.batch_size, channels, height, width)
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
        self.arms: list[Arm] = []

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
    def _arm(self, name: str, kind: str, metrics: str | None = None, every: int = 1) -> Arm:
        torch.manual_seed(self.config.seed)
        model = self._build_model().to(self.device).train()
        if self.config.compile:
            own_classes(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=self.config.lr, momentum=0.9)
        arm = Arm(name, kind, model, optimizer, model, metrics, every)
        arm.scaler = torch.amp.GradScaler(self.device.type) if self.config.amp == "fp16" else None
        return arm

    def build(self) -> None:
        cfg = self.config
        self.arms.append(self._arm("bare", BARE))
        if cfg.control:
            self.arms.append(self._arm("bare again (A/A control)", CONTROL))
        for metrics, every in cfg.recorder_pairs():
            arm = self._arm(f"gradlab {metrics}, every {every}", RECORDER, metrics, every)
            arm.recorder = GradientRecorder(arm.model, every=every,
                                            metrics=None if metrics == "default" else metrics)
            arm.after_backward = arm.recorder.step
            self.arms.append(arm)
        if cfg.alternatives:
            item = self._arm(".item() norm per parameter", ITEM_LOOP)
            item.after_backward = keeping(item, item_norm_loop)
            hist = self._arm(f"histc {HIST_BINS} bins per parameter (wandb-like)", HISTC)
            hist.after_backward = keeping(hist, histc_loop)
            self.arms += [item, hist]
        if cfg.compile:
            for arm in self.arms:
                arm.trained = torch.compile(arm.model)

    def step(self, arm: Arm) -> None:
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

    def _counted(self, arm: Arm, body: Callable[[], None], timed: bool = False) -> None:
        breaks, graphs = graph_counters()
        body()
        breaks2, graphs2 = graph_counters()
        arm.compiler["graph_breaks"] += breaks2 - breaks
        arm.compiler["unique_graphs"] += graphs2 - graphs
        if timed:  # a graph compiled inside a timed step makes that step's time meaningless
            arm.compiler["graphs_while_timed"] += graphs2 - graphs

    def warm_up(self) -> None:
        for arm in self.arms:
            def body(arm: Arm = arm) -> None:
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
                            self._counted(arm, functools.partial(self._time_into, times[i], arm), timed=True)
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

    def _time_into(self, times: list[float], arm: Arm) -> None:
        times.append(self._timed_step(arm))

    def _timed_step(self, arm: Arm) -> float:
        """One step in milliseconds, the device idle before it starts and after it ends."""
        self.sync()
        t0 = time.perf_counter_ns()
        self.step(arm)
        self.sync()
        return (time.perf_counter_ns() - t0) / 1e6

    # -- after the timed rounds (untimed) --
    def recorder_memory(self, arm: Arm) -> dict[str, Any]:
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

