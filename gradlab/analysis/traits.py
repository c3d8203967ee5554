"""What a run's meta says about the network: layer positions in weight layers, and its traits
(saturating activations, normalisation, skip connections, activation, init)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

WEIGHT_TYPE = re.compile(r"conv|linear", re.IGNORECASE)
_NORM_TYPE = re.compile(r"norm", re.IGNORECASE)
_SATURATING_TYPE = re.compile(r"sigmoid|tanh|hardtanh|softsign", re.IGNORECASE)
# attention modules: torch's MultiheadAttention, Hugging Face's GPT2Attention, BertSelfAttention, ...
_ATTENTION_TYPE = re.compile(r"attention", re.IGNORECASE)
_SPEC_NAME = re.compile(r"^(?:tv:)?([a-z_]+?)(\d*)$")
# zoo families whose spec names their switches; their defaults are ReLU, BatchNorm, default init
_ZOO_FAMILIES = ("resnet", "plain", "mlp", "wide_resnet", "resnext")


def meta_layers(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The meta's per-layer entries that name their layer (empty when the meta has none)."""
    layers = meta.get("layers")
    if not isinstance(layers, list):
        return []
    return [entry for entry in layers if isinstance(entry, dict) and "name" in entry]


def layer_positions(names: Sequence[str], depths: Sequence[int], meta: dict[str, Any],
                    weight_layers: Sequence[int] | None = None) -> np.ndarray:
    """Each layer's position in weight layers from the input (see :mod:`gradlab.analysis.diagnose`).

    ``weight_layers`` are depths of layers with weight gradients, used when the meta has no
    layer types.
    """
    depths = np.asarray(depths, dtype=np.int64)
    typed = [e for e in meta_layers(meta) if isinstance(e.get("type"), str) and "depth" in e]
    weight_depths: np.ndarray | None = None
    if typed:
        found = [int(e["depth"]) for e in typed if WEIGHT_TYPE.search(e["type"])]
        if found:
            weight_depths = np.unique(np.asarray(found, dtype=np.int64))
    if weight_depths is None and weight_layers is not None and len(weight_layers):
        weight_depths = np.unique(np.asarray(weight_layers, dtype=np.int64))
    if weight_depths is None:
        return np.unique(depths, return_inverse=True)[1].astype(float)
    return np.clip(np.searchsorted(weight_depths, depths, side="right") - 1, 0, None).astype(float)


def _parse_spec(meta: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The model family and the ``key=value`` options of the run's model spec."""
    spec = str(meta.get("model") or (meta.get("spec") or {}).get("model") or "")
    text = spec.strip().lower()
    name, options = text, {}
    if text.startswith("tv:"):
        name = "tv:" + text[3:].partition(":")[0]
    else:
        name, _, rest = text.partition(":")
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if eq:
                options[key.strip()] = value.strip()
    base = name.removeprefix("tv:")
    match = _SPEC_NAME.match(base)
    return (match.group(1) if match else base), options


def model_traits(meta: dict[str, Any]) -> dict[str, Any]:
    """What the network is made of, from layer types in the meta or else its model spec.

    Keys: ``saturating`` (sigmoid/tanh present), ``normalised`` (a norm layer present),
    ``residual`` (skip connections), ``act`` and ``init``; each None when unknown.
    """
    family, options = _parse_spec(meta)
    traits: dict[str, Any] = {"saturating": None, "normalised": None, "residual": None,
                              "act": None, "init": None}
    if family in _ZOO_FAMILIES:
        traits["act"] = options.get("act", "relu")
        traits["init"] = options.get("init", "default")
        traits["normalised"] = options.get("norm", "batch") != "none"
        traits["saturating"] = traits["act"] in ("sigmoid", "tanh")
        traits["residual"] = family != "plain" and family != "mlp"
    types = [str(e.get("type")) for e in meta_layers(meta) if e.get("type")]
    types += [str(t) for t in (meta.get("module_types") or {})]  # recorder runs: every module's type
    if types:
        traits["normalised"] = any(_NORM_TYPE.search(t) for t in types)  # LayerNorm and RMSNorm too
        traits["saturating"] = any(_SATURATING_TYPE.search(t) for t in types)
        if any(_ATTENTION_TYPE.search(t) for t in types):
            # a transformer: its blocks add each sublayer to a residual stream
            traits["residual"] = True
            traits["attention"] = True
    return traits
