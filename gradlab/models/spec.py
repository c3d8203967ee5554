"""Model spec strings: ``NAME[:key=value,...]``, the same in the CLI, experiment files and Python.

A spec parses into a :class:`ModelSpec` whose ``str()`` is canonical: lower-case name, options
in a fixed order, aliases resolved and options equal to their default dropped. So
``"ResNet34:norm=bn,act=relu"`` and ``"resnet34"`` name the same network and the same string.
Torchvision models are ``tv:NAME[:classes=N]``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from gradlab.errors import GradlabError
from gradlab.models import registry
from gradlab.models.options import KEY_ALIASES, OPTIONS
from gradlab.models.tv import check_tv_name

TV_PREFIX = "tv:"
_TV_DEFAULTS = {"classes": 1000}


@dataclass
class ModelSpec:
    """A parsed model spec. ``options`` holds only options that differ from the defaults."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    family: str = ""  # imagenet | cifar | mlp | torchvision

    def __str__(self) -> str:
        if not self.options:
            return self.name
        parts = [f"{k}={OPTIONS[k].format(v)}" for k, v in self.options.items()]
        return f"{self.name}:{','.join(parts)}"

    @property
    def defaults(self) -> dict[str, Any]:
        """Every option this model accepts, with its default."""
        if self.family == "torchvision":
            return dict(_TV_DEFAULTS)
        entry = registry.lookup(self.name)
        assert entry is not None
        return dict(entry.defaults)

    def resolved(self) -> dict[str, Any]:
        """Every option this model accepts, with the value this spec gives it."""
        return self.defaults | self.options


def _fail(spec: str, message: str) -> GradlabError:
    return GradlabError(f"bad model spec {spec!r}: {message}")


def _unknown_name(spec: str, name: str) -> GradlabError:
    if name.startswith("mlp") and name[3:].isdigit():
        return _fail(spec, "an MLP needs at least one layer, e.g. mlp10")
    known = registry.list_models()
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"known names: {', '.join(known)}"
    return GradlabError(
        f"unknown model {name!r}: {hint} (also mlpN for any N, tv:NAME for torchvision; see `gradlab models`)"
    )


def _split(spec: str) -> tuple[str, str]:
    """Split into (name, options text); a ``tv:`` prefix belongs to the name."""
    text = spec.strip()
    prefix = ""
    if text.lower().startswith(TV_PREFIX):
        prefix, text = TV_PREFIX, text[len(TV_PREFIX):]
    name, _, rest = text.partition(":")
    return prefix + name.strip().lower(), rest.strip()


def _parse_options(spec: str, name: str, text: str, defaults: dict[str, Any]) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if not text:
        return given
    for item in text.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise _fail(spec, f"option {item.strip()!r} is not key=value, e.g. {name}:act=sigmoid,norm=none")
        key = KEY_ALIASES.get(key, key)
        if key not in defaults:
            raise _fail(spec, _refusal(name, key, defaults))
        if key in given:
            raise _fail(spec, f"option {key} is given twice")
        try:
            given[key] = OPTIONS[key].parse(value)
        except ValueError as exc:
            raise _fail(spec, str(exc)) from None
    return given


def _refusal(name: str, key: str, defaults: dict[str, Any]) -> str:
    """Why ``key`` does not apply to ``name``, naming what to do instead."""
    valid = ", ".join(defaults)
    entry = registry.lookup(name)
    if entry is not None and entry.residual is False and key in ("shortcut", "zero_init_residual"):
        return f"{name} has no shortcuts, so {key}= does not apply: drop it or use {entry.twin}"
    if key in OPTIONS:
        return f"option {key} does not apply to {name}: its options are {valid}"
    close = difflib.get_close_matches(key, list(defaults), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option {key!r}{hint}: {name} takes {valid}"


def _check_combination(spec: str, options: dict[str, Any]) -> None:
    if options.get("zero_init_residual") and options.get("norm") == "none":
        raise _fail(spec, "zero_init_residual=true zeroes a norm gain, so it needs norm=batch")


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse ``NAME[:key=value,...]``; a :class:`GradlabError` names what is wrong and the fix."""
    if isinstance(spec, ModelSpec):
        spec = str(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise GradlabError("empty model spec: give a name such as resnet34 (see `gradlab models`)")
    name, text = _split(spec)
    if name.startswith(TV_PREFIX):
        check_tv_name(name[len(TV_PREFIX):])
        defaults, family = dict(_TV_DEFAULTS), "torchvision"
    else:
        entry = registry.lookup(name)
        if entry is None:
            raise _unknown_name(spec, name)
        defaults, family = entry.defaults, entry.family
    given = _parse_options(spec, name, text, defaults)
    _check_combination(spec, defaults | given)
    ordered = {k: given[k] for k in OPTIONS if k in given and given[k] != defaults[k]}
    return ModelSpec(name, ordered, family)
