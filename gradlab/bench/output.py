"""A benchmark's figures as a plain-text table and as strict JSON, written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gradlab.bench.config import BARE, CONTROL, BenchResult
from gradlab.common.atomic import write_text_atomic
from gradlab.common.jsonsafe import dumps


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically, making its folder first: never half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(target, text)


def write_json(result: BenchResult | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a result (or any dict of figures) as JSON, atomically; NaN becomes null."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    return write_text(path, dumps(data, indent=1) + "\n")


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
    lines += _memory_lines(result) + _compiler_lines(result)
    return "\n".join(lines)


def _memory_lines(result: BenchResult) -> list[str]:
    """What each recorder holds, and each arm's peak device memory above the bare arm's."""
    lines: list[str] = []
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
    return lines


def _compiler_lines(result: BenchResult) -> list[str]:
    """Graph breaks in the compiled forward and graphs dynamo compiled, per arm."""
    lines: list[str] = []
    if result.graph_breaks:
        caused = result.graph_breaks.get("caused_by_gradlab", {})
        for name, n in caused.items():
            lines.append(f"compiled forward, {name}: {n} graph break(s) beyond the bare model's")
    for arm in result.arms:
        if arm.compiler:
            lines.append(f"dynamo, {arm.name}: {arm.compiler['graph_breaks']} graph breaks, "
                         f"{arm.compiler['unique_graphs']} graphs compiled "
                         f"({arm.compiler['graphs_while_timed']} of them during timed steps)")
    return lines
