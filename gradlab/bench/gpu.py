"""The GPU rows of the published cost table, all in one short run.

Usage::

    python -m gradlab.bench.gpu --out DIR            # on a CUDA machine, about 5-6 minutes
    python -m gradlab.bench.gpu --out DIR --smoke    # the same logic on the CPU, tiny sizes

Cases (ResNet-34, batch 128, 32x32 inputs, SGD with momentum, fp32 and bf16 autocast):

- the recorder with the default metrics, every step (target <= 1.02);
- all metrics, every step (target <= 1.10);
- all metrics, every 10th step (target <= 1.02);
- the model trained through ``torch.compile``, default metrics, every step (target <= 1.03,
  and no graph break in the compiled forward that the bare model does not have).

The eager cases of one dtype are timed together, interleaved, with an A/A control and the two
common alternatives (``.item()`` per parameter, wandb-like histograms) beside them. Results are
written after each section, so a run cut short keeps what it finished: ``DIR/bench_gpu.md``
(the table), ``DIR/bench_gpu.json`` (every figure) and ``DIR/bench_gpu.txt`` (the printouts).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradlab.bench.config import CONTROL, HISTC, ITEM_LOOP, BenchConfig, BenchResult
from gradlab.bench.harness import run_bench
from gradlab.bench.output import format_bench, write_json, write_text

#: (label, metric set, every, target) of the eager rows.
EAGER_CASES = (
    ("default metrics, every step", "default", 1, 1.02),
    ("all metrics, every step", "all", 1, 1.10),
    ("all metrics, every 10 steps", "all", 10, 1.02),
)
COMPILED_CASE = ("torch.compile, default metrics, every step", "default", 1, 1.03)


def _sections(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"spec": "resnet20", "batch_size": 4, "input_size": 16, "device": "cpu", "repeats": 2,
                "warmup": 1, "eager_seconds": 5.0, "compile_seconds": 5.0,
                "compile_spec": "mlp2:width=8,size=16"}
    return {"spec": "resnet34", "batch_size": 128, "input_size": 32, "device": "cuda", "repeats": 40,
            "warmup": 10, "eager_seconds": 60.0, "compile_seconds": 20.0, "compile_spec": "resnet34"}


def _row(case: str, amp: str, target: float, result: BenchResult, arm_name: str, extra: str = "") -> dict[str, Any]:
    arm = result.arm(arm_name)
    control = next((a for a in result.arms if a.kind == CONTROL), None)
    return {
        "case": case, "amp": amp, "target": target,
        "ratio": arm.ratio.median, "q1": arm.ratio.q1, "q3": arm.ratio.q3,
        "lo": arm.ratio.lo, "hi": arm.ratio.hi, "mean_ratio": arm.mean_ratio,
        "bare_ms": result.arm("bare").step_ms, "step_ms": arm.step_ms,
        "control": None if control is None else control.ratio.median,
        "rounds": result.rounds, "met": arm.ratio.median <= target, "note": extra,
    }


def _markdown(rows: list[dict[str, Any]], env: dict[str, Any], others: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Measured on {env.get('device', '?')}, torch {env.get('torch', '?')} (CUDA {env.get('cuda')}), "
        f"{env.get('date', '?')}, with `{command}`.",
        "",
        "| case | amp | target | ratio to bare (median, IQR over rounds) | mean ratio | A/A control | bare step "
        "| met | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        control = "" if r["control"] is None else f"{r['control']:.3f}"
        lines.append(
            f"| {r['case']} | {r['amp']} | <= {r['target']:.2f} | {r['ratio']:.3f} ({r['q1']:.3f}-{r['q3']:.3f}) "
            f"| {r['mean_ratio']:.3f} | {control} | {r['bare_ms']:.1f} ms "
            f"| {'yes' if r['met'] else 'no'} | {r['note']} |"
        )
    if others:
        lines += ["", "The common alternatives, timed in the same rounds:", "",
                  "| way of recording every step | amp | ratio to bare (median, IQR) | mean ratio |",
                  "| --- | --- | --- | --- |"]
        for o in others:
            lines.append(f"| {o['name']} | {o['amp']} | {o['ratio']:.3f} ({o['q1']:.3f}-{o['q3']:.3f}) "
                         f"| {o['mean_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


class _Progress:
    """What the run has measured so far; saved whole after every section, so a cut keeps it."""

    def __init__(self, out: Path, command: str) -> None:
        self.out, self.command = out, command
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.others: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}
        self.texts: list[str] = []
        self.env: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, msg: str) -> None:
        print(f"[{self.elapsed():6.0f} s] {msg}", file=sys.stderr, flush=True)

    def save(self) -> None:
        write_json({"command": self.command, "rows": self.rows, "alternatives": self.others,
                    "sections": self.sections, "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                    "elapsed_s": self.elapsed()}, self.out / "bench_gpu.json")
        write_text(self.out / "bench_gpu.md", _markdown(self.rows, self.env, self.others, self.command))
        write_text(self.out / "bench_gpu.txt", "\n\n".join(self.texts) + "\n")

    def section(self, key: str, config: BenchConfig, smoke: bool) -> BenchResult | None:
        """Run one section; on failure note it and go on (on the CPU smoke run, raise)."""
        try:
            result = run_bench(config, progress=self.say)
        except Exception as exc:  # keep going: the other sections are worth their device time
            if smoke:
                raise
            self.sections[key] = {"error": f"{type(exc).__name__}: {exc}"}
            self.say(f"{key.replace('_', ', amp ')} failed: {type(exc).__name__}: {exc}")
            self.save()
            return None
        self.sections[key] = result.to_dict()
        self.texts.append(format_bench(result))
        print(self.texts[-1], flush=True)
        return result


def _eager(run: _Progress, s: dict[str, Any], amp: str, smoke: bool) -> None:
    """The eager rows of one dtype, timed together with the control and the alternatives."""
    config = BenchConfig(
        spec=s["spec"], batch_size=s["batch_size"], input_size=s["input_size"], device=s["device"],
        amp=amp, repeats=s["repeats"], warmup=s["warmup"], max_seconds=s["eager_seconds"],
        recorder_arms=tuple((m, e) for _, m, e, _ in EAGER_CASES),
    )
    run.say(f"eager, amp {amp}")
    result = run.section(f"eager_{amp}", config, smoke)
    if result is None:
        return
    run.env = result.environment
    for case, metrics, every, target in EAGER_CASES:
        run.rows.append(_row(case, amp, target, result, f"gradlab {metrics}, every {every}"))
    for arm in result.arms:
        if arm.kind in (ITEM_LOOP, HISTC):
            run.others.append({"name": arm.name, "amp": amp, "ratio": arm.ratio.median, "q1": arm.ratio.q1,
                               "q3": arm.ratio.q3, "mean_ratio": arm.mean_ratio})
    run.save()


def _compiled(run: _Progress, s: dict[str, Any], amp: str, smoke: bool) -> None:
    """The compiled row of one dtype: its ratio, and the graph breaks the recorder causes."""
    case, metrics, every, target = COMPILED_CASE
    spec = s["compile_spec"]
    config = BenchConfig(
        spec=spec, batch_size=s["batch_size"], input_size=s["input_size"], device=s["device"],
        amp=amp, repeats=s["repeats"], warmup=max(3, s["warmup"] // 2), compile=True,
        alternatives=False, control=False, max_seconds=s["compile_seconds"],
        recorder_arms=((metrics, every),),
    )
    run.say(f"compiled, amp {amp} (compiling two copies of {spec})")
    result = run.section(f"compiled_{amp}", config, smoke)
    if result is None:
        return
    arm_name = f"gradlab {metrics}, every {every}"
    breaks = (result.graph_breaks or {}).get("caused_by_gradlab", {}).get(arm_name)
    during = {a.name: (a.compiler or {}).get("graphs_while_timed") for a in result.arms}
    row = _row(case, amp, target, result, arm_name,
               extra=f"graph breaks caused by gradlab in the compiled forward: {breaks}; "
                     f"graphs compiled during timed steps: {during}")
    row["met"] = bool(row["met"] and breaks == 0)
    row["graph_breaks_caused"] = breaks
    run.rows.append(row)
    run.save()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gradlab.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Directory for bench_gpu.md, .json and .txt.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes on the CPU: checks the logic only.")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="Seconds the whole run may take: the compiled bf16 case is left out when "
                             "less than 100 s of it is left.")
    parser.add_argument("--no-compile", action="store_true", help="Leave out the torch.compile cases.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section, saving after each; 2 when there is no CUDA device and no ``--smoke``."""
    args = _parser().parse_args(argv)
    s = _sections(args.smoke)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine, or pass --smoke to check the logic on the CPU",
              file=sys.stderr)
        return 2
    if not args.smoke:
        torch.backends.cudnn.benchmark = True  # as training scripts usually set it; same for every arm
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Progress(out, "python -m gradlab.bench.gpu --out DIR" + (" --smoke" if args.smoke else ""))
    for amp in ("none", "bf16"):
        _eager(run, s, amp, args.smoke)
    for amp in () if args.no_compile else ("none", "bf16"):
        left = args.budget_s - run.elapsed()
        if amp == "bf16" and left < 100:
            run.say(f"skipping the compiled bf16 case: {left:.0f} s of the budget left")
            break
        _compiled(run, s, amp, args.smoke)
    run.say(f"done: {out / 'bench_gpu.md'}")
    print((out / "bench_gpu.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
