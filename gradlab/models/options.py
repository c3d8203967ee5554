"""The switches of a model spec: their spellings, valid values and canonical forms.

Each option parses the text after ``key=`` into a canonical value (raising ``ValueError`` with a
message that names the valid values) and formats it back, so that a spec string round-trips.
Which options a model accepts, and their defaults, is up to its registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradlab.models.init import SCHEMES, parse_init
from gradlab.models.layers import ACTIVATIONS


@dataclass(frozen=True)
class Option:
    """One ``key=value`` switch."""

    key: str
    parse: Callable[[str], Any]  # text -> canonical value; ValueError names the valid values
    valid: str  # the valid values, as documentation and error text
    help: str
    format: Callable[[Any], str] = str


def _choice(key: str, spellings: dict[str, str]) -> Callable[[str], str]:
    canonical = list(dict.fromkeys(spellings.values()))

    def parse(text: str) -> str:
        value = spellings.get(text.strip().lower())
        if value is None:
            raise ValueError(f"{key}={text} is not valid: choose one of {', '.join(canonical)}")
        return value

    return parse


def _positive_int(key: str, example: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{key}={text} is not valid: give a positive integer, e.g. {key}={example}")
        return value

    return parse


def _bool(key: str) -> Callable[[str], bool]:
    spellings = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def parse(text: str) -> bool:
        value = spellings.get(text.strip().lower())
        if value is None:
            raise ValueError(f"{key}={text} is not valid: choose true or false")
        return value

    return parse


def _init(text: str) -> str:
    return parse_init(text)


_ACT_SPELLINGS = {name: name for name in ACTIVATIONS} | {
    "linear": "identity", "none": "identity", "leakyrelu": "leaky_relu"}

# Canonical order: a spec's options are written back in this order.
OPTIONS: dict[str, Option] = {
    o.key: o
    for o in [
        Option("act", _choice("act", _ACT_SPELLINGS), ", ".join(ACTIVATIONS) + " (linear = identity)",
               "activation at every position (leaky_relu has slope 0.01)"),
        Option("norm", _choice("norm", {"batch": "batch", "bn": "batch", "none": "none"}), "batch, none",
               "BatchNorm after every convolution/hidden linear layer, or no norm layer (layers then get a bias)"),
        Option("init", _init, ", ".join(SCHEMES) + ", normal:STD",
               "weight initialisation; every scheme but default zeroes the biases"),
        Option("zero_init_residual", _bool("zero_init_residual"), "true, false",
               "start the last norm gain of every residual branch at 0 (needs norm=batch)",
               format=lambda v: "true" if v else "false"),
        Option("shortcut", _choice("shortcut", {"projection": "projection", "b": "projection",
                                                "zeropad": "zeropad", "a": "zeropad", "identity": "zeropad"}),
               "projection, zeropad",
               "where a block changes shape: 1x1 conv + norm (option B) or subsample + zero channels (option A)"),
        Option("width", _positive_int("width", 32), "positive integer",
               "filters of the first stage (doubled per stage) / units per hidden layer of an MLP"),
        Option("stem", _choice("stem", {"imagenet": "imagenet", "cifar": "cifar"}), "imagenet, cifar",
               "7x7 stride-2 conv + max-pool (224x224 inputs), or 3x3 stride-1 conv (32x32 inputs)"),
        Option("size", _positive_int("size", 28), "positive integer", "input height and width an MLP takes"),
        Option("in_channels", _positive_int("in_channels", 1), "positive integer", "input channels"),
        Option("classes", _positive_int("classes", 10), "positive integer", "outputs of the classifier"),
    ]
}

KEY_ALIASES: dict[str, str] = {"in_ch": "in_channels", "num_classes": "classes", "activation": "act"}
