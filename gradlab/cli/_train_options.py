"""The training options shared by ``gradlab compare`` (and anything else that trains)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gradlab.training.config import AMP_MODES, NONFINITE_POLICIES, TrainConfig


def train_options(func: Callable) -> Callable:
    """Add one click option per training setting; defaults come from :class:`TrainConfig`."""
    d = TrainConfig(model="")
    options = [
        click.option("--data", default=d.data, show_default=True,
                     help="synthetic (built in, no download), cifar10, cifar100, mnist, fashion-mnist."),
        click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="Directory holding real datasets (torchvision layout)."),
        click.option("--download", is_flag=True, help="Let torchvision fetch a missing dataset."),
        click.option("--augment", is_flag=True, help="Pad 4, random crop, flip (the ResNet paper's CIFAR recipe)."),
        click.option("--steps", type=int, default=None,
                     help="Optimizer steps  [default: 300 on a CPU, 2000 on a GPU, unless --epochs is given]"),
        click.option("--epochs", type=float, default=None,
                     help="Train for epochs instead of --steps (give one of the two)."),
        click.option("--batch-size", type=int, default=d.batch_size, show_default=True,
                     help="Global batch size (split across processes under torchrun)."),
        click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=d.optimizer,
                     show_default=True),
        click.option("--lr", type=float, default=d.lr, show_default=True, help="Learning rate."),
        click.option("--momentum", type=float, default=d.momentum, show_default=True),
        click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD)."),
        click.option("--weight-decay", type=float, default=d.weight_decay, show_default=True),
        click.option("--schedule", default=d.schedule, show_default=True,
                     help="constant, cosine, or step:M1,M2[@FACTOR]."),
        click.option("--warmup-steps", type=int, default=d.warmup_steps, show_default=True),
        click.option("--seed", type=int, default=d.seed, show_default=True),
        click.option("--device", default=d.device, show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--threads", type=int, default=None,
                     help="CPU threads for torch (default: torch's count on this machine). CPU results "
                          "differ in the last bits between counts, so it is part of a run's identity."),
        click.option("--amp", type=click.Choice(list(AMP_MODES)), default=d.amp, show_default=True),
        click.option("--clip", default=d.clip, show_default=True,
                     help="none, norm:T, value:T, agc:LAMBDA, autoclip:PERCENTILE, zscore:Z."),
        click.option("--on-nonfinite", type=click.Choice(list(NONFINITE_POLICIES)), default=d.on_nonfinite,
                     show_default=True, help="Stop cleanly on a non-finite step, or skip that update."),
        click.option("--eval-every", type=int, default=d.eval_every, show_default=True),
        click.option("--eval-batches", type=int, default=d.eval_batches, show_default=True,
                     help="Held-out batches per evaluation."),
        click.option("--flush-every", type=int, default=d.flush_every, show_default=True,
                     help="Write records to disk every N steps (what a killed run keeps)."),
        click.option("--record-every", type=int, default=d.record_every, show_default=True,
                     help="Record gradients every N-th step."),
        click.option("--metrics", type=click.Choice(["default", "all"]), default=d.metrics, show_default=True,
                     help="default: gradient and weight norms; all: plus activation statistics."),
        click.option("--train-size", type=int, default=None,
                     help="Training images to use (synthetic: how many to generate; real data: the first N)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from_options(model: str, options: dict[str, Any]) -> TrainConfig:
    """Build the run settings from the parsed options (and consume them from ``options``)."""
    names = set(TrainConfig.field_names())
    values = {k: options.pop(k) for k in list(options) if k in names}
    # The training length is given once: --steps, --epochs, or neither (steps sized for the
    # device). Both together is refused by TrainConfig.validate, as in an experiment file.
    return TrainConfig(model=model, **values)
