"""Everything about a run that can be checked before any run starts.

``gradlab compare`` and ``gradlab run`` check every run (every grid point) here first, so a bad
value in the last point, an unwritable report path or a model too large for this machine is a
one-line error before the first step, not a traceback after hours of training.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import torch

from gradlab.errors import GradlabError
from gradlab.models import build_model, parse_spec
from gradlab.training.clipping import parse_clip
from gradlab.training.config import MAX_STEPS, TrainConfig
from gradlab.training.data import (
    SYNTHETIC_EVAL_SIZE,
    SYNTHETIC_TRAIN_SIZE,
    check_data_args,
    check_data_files,
    data_shape,
)
from gradlab.training.device import resolve_device
from gradlab.training.optim import OPTIMIZERS, lr_factor_fn

#: Bytes per float32 element: weights, gradients, optimizer state and activations.
_FLOAT_BYTES = 4
#: Copies of the weights an optimizer keeps: SGD's momentum buffer, Adam's two moments.
_OPTIMIZER_STATE = {"sgd": 1, "adam": 2, "adamw": 2}


def check_run(config: TrainConfig) -> None:
    """Refuse a run that cannot start, with a one-line error naming the fix.

    Checks the settings' values and ranges, the model spec, the clipping method, the
    schedule, the optimizer, the dataset (its files, unless they may be downloaded), the
    device, and that the model, its training state and one batch fit in memory here.
    """
    config.validate()
    parse_spec(config.model)
    parse_clip(config.clip)
    check_data_args(config.data, data_dir=config.data_dir, augment=config.augment)
    check_data_files(config.data, config.data_dir, config.download)
    if config.optimizer not in OPTIMIZERS:
        raise GradlabError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}")
    lr_factor_fn(config.schedule, config.steps or 1, config.warmup_steps)
    device = resolve_device(config.device)
    _, _, train_images = data_shape(config.data)
    if config.data == "synthetic" and config.train_size is not None:
        train_images = config.train_size
    elif config.train_size is not None:
        train_images = min(train_images, config.train_size)
    if config.epochs is not None:
        steps = math.ceil(config.epochs * train_images / config.batch_size)
        if steps > MAX_STEPS:
            raise GradlabError(f"epochs {config.epochs:g} means {steps:,} steps, more than "
                               f"{MAX_STEPS:,}: pass fewer --epochs")
    if config.batch_size > train_images:
        raise GradlabError(f"batch_size {config.batch_size} is larger than the {train_images} "
                           f"training images of {config.data}: pass a smaller --batch-size")
    check_memory(config, device.type)


def check_memory(config: TrainConfig, device_type: str = "cpu") -> None:
    """Refuse a run whose model, training state and batch would not fit in memory here."""
    need = estimate_bytes(config)
    if need is None:
        return
    _refuse_if_too_large(config.model, config.batch_size, *need, device_type,
                         "use a smaller model or width, a smaller --batch-size, or a smaller "
                         "--train-size")


def check_model_fits(spec: str, batch_size: int, input_size: tuple[int, int, int],
                     num_classes: int | None, device_type: str, optimizer: str | None = "sgd") -> None:
    """Refuse a model that, trained at ``batch_size`` on inputs of ``input_size``, would not
    fit in memory here (for commands that build a model outside a training run; ``optimizer``
    None for a single backward pass, without optimizer state)."""
    if num_classes is None:
        try:
            with torch.device("meta"):
                num_classes = int(list(build_model(spec, in_channels=input_size[0]).parameters())[-1].shape[0])
        except Exception:
            return
    counted = _model_elements(spec, num_classes, tuple(input_size), batch_size)
    if counted is None:
        return
    params, activations = counted
    state = 0 if optimizer is None else _OPTIMIZER_STATE.get(optimizer, 2)
    model_bytes = _FLOAT_BYTES * (params * (2 + state) + 2 * activations)
    _refuse_if_too_large(spec, batch_size, model_bytes, 0, device_type,
                         "use a smaller model or width, or a smaller --batch-size")


def _refuse_if_too_large(spec: str, batch_size: int, model_bytes: int, data_bytes: int,
                         device_type: str, fix: str) -> None:
    if device_type == "cuda":
        checks = [(model_bytes, _cuda_free(), "the GPU"), (data_bytes, _host_available(), "this machine")]
    else:
        checks = [(model_bytes + data_bytes, _host_available(), "this machine")]
    for wanted, available, where in checks:
        if available is not None and wanted > available:
            raise GradlabError(
                f"{spec} at batch size {batch_size} needs about "
                f"{_gb(wanted)} (weights, gradients, optimizer state, activations and data); "
                f"{where} has {_gb(available)} available: {fix}"
            )


def estimate_bytes(config: TrainConfig) -> tuple[int, int] | None:
    """(bytes the model needs in training, bytes the data needs) for a run, estimated without
    allocating: the network is built on PyTorch's ``meta`` device (shapes, no storage) and one
    batch is passed through it to count the activations. ``None`` where it cannot be built so."""
    input_size, classes, _ = data_shape(config.data)
    model = _model_elements(config.model, classes, input_size, config.batch_size)
    if model is None:
        return None
    params, activations = model
    state = _OPTIMIZER_STATE.get(config.optimizer, 2)
    # Weights, their gradients and the optimizer's copies; activations kept for the backward
    # pass and their gradients.
    model_bytes = _FLOAT_BYTES * (params * (2 + state) + 2 * activations)
    data_bytes = 0
    if config.data == "synthetic":  # generated in memory, both splits
        images = (config.train_size or SYNTHETIC_TRAIN_SIZE) + (config.eval_size or SYNTHETIC_EVAL_SIZE)
        data_bytes = images * (math.prod(input_size) * _FLOAT_BYTES + 8)
    return model_bytes, data_bytes


@functools.lru_cache(maxsize=64)
def _model_elements(spec: str, classes: int, input_size: tuple[int, ...],
                    batch_size: int) -> tuple[int, int] | None:
    """(parameters, activation elements of one batch) of a model, counted on the meta device."""
    try:
        with torch.device("meta"):
            model = build_model(spec, num_classes=classes, in_channels=input_size[0])
    except Exception:  # not a zoo spec (a factory), or not buildable without storage
        return None
    params = sum(p.numel() for p in model.parameters())
    counted = [0]

    def count(module: Any, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            counted[0] += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(batch_size, *input_size, device="meta"))
    except Exception:
        counted[0] = 0  # the parameters alone are still a lower bound worth checking
    finally:
        for handle in handles:
            handle.remove()
    return params, counted[0]


def _host_available() -> int | None:
    """Bytes of memory available to a new allocation on this machine (Linux), else ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cuda_free() -> int | None:
    try:
        return int(torch.cuda.mem_get_info()[0])
    except Exception:
        return None


def _gb(count: int) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count / 1e6:,.0f} MB"


def check_output_file(path: str | os.PathLike[str] | None, option: str) -> None:
    """Refuse an output file (a report, a JSON file) that could not be written, before any
    work: it must not be a directory, and its nearest existing folder must be writable."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise GradlabError(f"{option} {target} is a directory; pass a file name such as "
                           f"{target / 'report.html'}")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GradlabError(f"cannot write {option} {target}: {existing} is not a writable "
                           f"directory; pass a writable {option}")


def check_output_dir(path: str | os.PathLike[str], option: str) -> None:
    """Refuse an output directory that could not be created or written, before any work."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise GradlabError(f"{option} {target} is a file; pass a directory")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GradlabError(f"cannot write to {option} {target}: {existing} is not a writable "
                           f"directory; pass a writable {option}")
