"""The recorder's fixed cost per step on small models: a tiny GPT-2 and an MLP, on the CPU.

Small models have short steps, so what the recorder pays per step whatever the model's size
(Python calls, small kernel launches) shows most there. Arms: the bare step, the bare step
again (A/A control: the machine's noise), and the recorder with the default metrics at every
step. The arms take one step each in turn, in an order that rotates every step, so load from
other processes hits all alike; a round is ``steps`` steps of every arm, and an arm's figure
for a round is its median step time. Printed: per model, the median over rounds of
arm / bare, with the min-max over rounds.

    OMP_NUM_THREADS=1 python -m gradlab.bench.fixed --rounds 9 --steps 30
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradlab.recorder import GradientRecorder


def _mlp() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    return model, lambda m: nn.functional.cross_entropy(m(x), y)


def _gpt2() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 256, (8, 32))
    return model, lambda m: m(input_ids=ids, labels=ids).loss


MODELS = {"mlp": _mlp, "gpt2-tiny": _gpt2}


class _Arm:
    def __init__(self, name: str, model: nn.Module, loss: Callable, recorder: bool) -> None:
        self.name = name
        self.model = model
        self.loss = loss
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        self.rec = GradientRecorder(model, every=1) if recorder else None
        self.times: list[float] = []

    def step(self) -> None:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model).backward()
        if self.rec is not None:
            self.rec.step()
            if self.rec.current_step % 64 == 0:
                self.rec.pop_frame(), self.rec.pop_step_frame()  # bounded memory, as a writer does
        self.opt.step()
        self.times.append(time.perf_counter() - start)


def measure(name: str, rounds: int, steps: int, warmup: int = 10) -> dict[str, Any]:
    model, loss = MODELS[name]()
    arms = [_Arm("bare", copy.deepcopy(model), loss, False), _Arm("bare again", copy.deepcopy(model), loss, False),
            _Arm("recorder default every 1", copy.deepcopy(model), loss, True)]
    for _ in range(warmup):
        for arm in arms:
            arm.step()
    ratios: dict[str, list[float]] = {a.name: [] for a in arms[1:]}
    bare_ms = []
    for _ in range(rounds):
        for arm in arms:
            arm.times.clear()
        for s in range(steps):
            k = s % len(arms)
            for arm in arms[k:] + arms[:k]:
                arm.step()
        base = statistics.median(arms[0].times)
        bare_ms.append(base * 1e3)
        for arm in arms[1:]:
            ratios[arm.name].append(statistics.median(arm.times) / base)
    return {"model": name, "bare_ms": statistics.median(bare_ms),
            **{k: (statistics.median(v), min(v), max(v)) for k, v in ratios.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    for name in args.models:
        r = measure(name, args.rounds, args.steps)
        cells = "; ".join(f"{k} {v[0]:.3f} (min-max {v[1]:.3f}-{v[2]:.3f})" for k, v in r.items()
                          if isinstance(v, tuple))
        print(f"{name}: bare step {r['bare_ms']:.2f} ms; {cells}", flush=True)


if __name__ == "__main__":
    main()
