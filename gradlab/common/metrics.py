"""The schema of every metric gradlab records: one source for names, kinds, units and labels.

A metric is a column of a run's tables. The recorder writes them, the store lays them out, the
diagnosis judges them, the report labels them and the benchmarks synthesise them; all of them
read this module, which needs neither torch nor any other part of gradlab.

Each :class:`Metric` says:

- ``scope``: ``"layer"`` (one value per layer and recorded step, in the layer table) or
  ``"step"`` (one value per step, in the step table);
- ``source``: what it is computed from: ``"parameters"`` (weights and their ``.grad`` after
  backward), ``"activations"`` (a layer's output, in a forward hook), ``"activation gradients"``
  (dL/dh at a layer's output, in a tensor hook), ``"optimizer"`` (the optimizer step) or
  ``"trainer"`` (the training loop itself);
- ``unit``: what a value measures (``"L2 norm"``, ``"fraction"``, ``"cosine"``, ...);
- ``label``: the short name a plot's axis or legend shows.

The per-layer order of :data:`LAYER_METRICS` is the order of the layer table's columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

Scope = Literal["layer", "step"]
Source = Literal["parameters", "activations", "activation gradients", "optimizer", "trainer"]


@dataclass(frozen=True)
class Metric:
    """One recorded quantity: its stored name and how to read it."""

    name: str
    scope: Scope
    source: Source
    unit: str
    label: str
    description: str


# Per-layer metrics, recorded by the recorder.
GRAD_NORM = "grad_norm"
WEIGHT_NORM = "weight_norm"
UPDATE_RATIO = "update_ratio"
ACT_GRAD_NORM = "act_grad_norm"
ACT_MEAN = "act_mean"
ACT_STD = "act_std"
ACT_ZERO_FRAC = "act_zero_frac"
ACT_DEAD_UNITS = "act_dead_units"
ACT_DEAD_UNITS_RUN = "act_dead_units_run"
ACT_SATURATED_FRAC = "act_saturated_frac"
ACT_COS = "act_cos"
ACT_GRAD_COS = "act_grad_cos"
ACT_GRAD_COS_CLASS = "act_grad_cos_class"
GRAD_NONFINITE = "grad_nonfinite"

# Per-step metrics: the recorder's, then the training loop's.
TOTAL_GRAD_NORM = "total_grad_norm"
SKIPPED = "skipped"
LOSS = "loss"
TRAIN_ACC = "train_acc"
CLIP_NORM_BEFORE = "clip_norm_before"
CLIP_NORM_AFTER = "clip_norm_after"
CLIP_THRESHOLD = "clip_threshold"
CLIP_FIRED = "clip_fired"
NONFINITE = "nonfinite"
LR = "lr"
AMP_SCALE = "amp_scale"
EVAL_LOSS = "eval_loss"
EVAL_ACC = "eval_acc"

_P: Final = "parameters"
_A: Final = "activations"
_G: Final = "activation gradients"
_T: Final = "trainer"

SCHEMA: tuple[Metric, ...] = (
    Metric(GRAD_NORM, "layer", _P, "L2 norm", "weight-gradient norm",
           "L2 norm of the layer's parameter gradients (dL/dW)"),
    Metric(WEIGHT_NORM, "layer", _P, "L2 norm", "weight norm",
           "L2 norm of the layer's parameters"),
    Metric(UPDATE_RATIO, "layer", _P, "ratio", "update / weight norm",
           "norm of the optimizer's update over the norm of the weights"),
    Metric(ACT_GRAD_NORM, "layer", _G, "L2 norm", "dL/dh norm",
           "L2 norm of the back-propagated gradient at the layer's output"),
    Metric(ACT_MEAN, "layer", _A, "value", "activation mean",
           "mean of the layer's output over the batch"),
    Metric(ACT_STD, "layer", _A, "value", "std of layer responses",
           "standard deviation of the layer's output over the batch"),
    Metric(ACT_ZERO_FRAC, "layer", _A, "fraction", "zero fraction",
           "fraction of a ReLU-family output's elements that are exactly 0"),
    Metric(ACT_DEAD_UNITS, "layer", _A, "fraction", "dead units",
           "fraction of a ReLU-family layer's units that are 0 for every example of the batch"),
    Metric(ACT_DEAD_UNITS_RUN, "layer", _A, "fraction", "dead units (whole run)",
           "fraction of units dead at every recorded step so far"),
    Metric(ACT_SATURATED_FRAC, "layer", _A, "fraction", "saturated fraction",
           "fraction of a sigmoid or tanh output where the derivative is near 0"),
    Metric(ACT_COS, "layer", _A, "cosine", "output cosine",
           "mean pairwise cosine of the per-example outputs across the batch"),
    Metric(ACT_GRAD_COS, "layer", _G, "cosine", "dL/dh cosine",
           "mean pairwise cosine of the per-example dL/dh across the batch"),
    Metric(ACT_GRAD_COS_CLASS, "layer", _G, "cosine", "same-class dL/dh cosine",
           "mean pairwise cosine of dL/dh over pairs of examples with the same label"),
    Metric(GRAD_NONFINITE, "layer", _P, "count", "non-finite gradient elements",
           "number of NaN or infinite elements in the layer's parameter gradients"),
    Metric(TOTAL_GRAD_NORM, "step", _P, "L2 norm", "total gradient norm",
           "L2 norm of all recorded parameter gradients together"),
    Metric(SKIPPED, "step", "optimizer", "flag", "skipped step",
           "1 where the optimizer step was skipped: by the GradScaler, or by the trainer's "
           "on_nonfinite='skip'"),
    Metric(LOSS, "step", _T, "value", "training loss", "the training loss of the step's batch"),
    Metric(TRAIN_ACC, "step", _T, "fraction", "training accuracy",
           "accuracy on the step's training batch"),
    Metric(CLIP_NORM_BEFORE, "step", _T, "L2 norm", "gradient norm before clipping",
           "total gradient norm the clipper saw"),
    Metric(CLIP_NORM_AFTER, "step", _T, "L2 norm", "gradient norm after clipping",
           "total gradient norm after the clipper"),
    Metric(CLIP_THRESHOLD, "step", _T, "L2 norm", "clipping threshold",
           "the threshold the clipper used at this step"),
    Metric(CLIP_FIRED, "step", _T, "flag", "clipping fired", "1 where the clipper changed the gradient"),
    Metric(NONFINITE, "step", _T, "flag", "non-finite step", "1 where the loss or a gradient was not finite"),
    Metric(LR, "step", _T, "value", "learning rate", "the learning rate of the first parameter group"),
    Metric(AMP_SCALE, "step", _T, "value", "loss scale", "the GradScaler's loss scale after the step (fp16)"),
    Metric(EVAL_LOSS, "step", _T, "value", "held-out loss", "mean loss on the held-out set, at evaluation steps"),
    Metric(EVAL_ACC, "step", _T, "fraction", "held-out accuracy", "accuracy on the held-out set, at evaluation steps"),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in SCHEMA}

#: Per-layer metrics, in the order their columns are laid out (and rows are sorted).
LAYER_METRICS: tuple[str, ...] = tuple(m.name for m in SCHEMA if m.scope == "layer")
#: Per-step metrics the recorder can be asked for (``metrics=``).
RECORDER_STEP_METRICS: tuple[str, ...] = (TOTAL_GRAD_NORM,)
#: Every metric the recorder can be asked for, in layout order.
RECORDER_METRICS: tuple[str, ...] = LAYER_METRICS + RECORDER_STEP_METRICS
#: Per-step scalars the training loop keeps on the device, in the order it flushes them (it
#: adds the learning rate, the loss scale and the evaluations from the host).
TRAINER_STEP_METRICS: tuple[str, ...] = (LOSS, TRAIN_ACC, CLIP_NORM_BEFORE, CLIP_NORM_AFTER, CLIP_THRESHOLD,
                                         CLIP_FIRED, NONFINITE)
#: The recorder's default set: cheap, needs no forward hooks. A NaN or inf in a layer's
#: gradient already makes its grad_norm non-finite, so the first non-finite step is found
#: without the exact count (grad_nonfinite), which costs more passes than the norms themselves.
DEFAULT_METRICS: tuple[str, ...] = (GRAD_NORM, WEIGHT_NORM, TOTAL_GRAD_NORM)

#: Metrics read from parameters and their ``.grad`` after backward.
PARAM_METRICS = frozenset(n for n in RECORDER_METRICS if BY_NAME[n].source == _P)
#: Metrics that need forward hooks (and, for dL/dh, tensor hooks on the output).
ACTIVATION_METRICS = frozenset(n for n in RECORDER_METRICS if BY_NAME[n].source in (_A, _G))
#: Metrics taken from dL/dh at layer outputs (need a tensor hook on the output).
ACT_GRAD_METRICS = frozenset(n for n in RECORDER_METRICS if BY_NAME[n].source == _G)

#: The depth-profile signals, best first: dL/dh where recorded, else the weight gradients.
PROFILE_SIGNALS: tuple[str, ...] = (ACT_GRAD_NORM, GRAD_NORM)

#: Names older versions stored, and what they mean today. ``act_dead_frac`` held the fraction
#: of output elements exactly 0 (about one half for any ReLU at init), not dead units.
LEGACY_NAMES: dict[str, str] = {"act_dead_frac": ACT_ZERO_FRAC}


def metric(name: str) -> Metric:
    """The schema entry of ``name``; ``KeyError`` naming the known metrics when there is none."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}: known are {', '.join(BY_NAME)}") from None


def label(name: str) -> str:
    """The axis or legend label of ``name`` (the name itself for a metric outside the schema)."""
    entry = BY_NAME.get(name)
    return entry.label if entry is not None else name


def in_layout_order(names: Iterable[str]) -> list[str]:
    """``names`` sorted as the schema lays them out; names outside it last, alphabetically."""
    rank = {m.name: i for i, m in enumerate(SCHEMA)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))
