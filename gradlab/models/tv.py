"""Torchvision classification models as ``tv:NAME``, built with random weights (``weights=None``).

torchvision is imported only when such a spec is used: its import takes seconds.
"""

from __future__ import annotations

import difflib

from torch import nn

from gradlab.errors import GradlabError

# Models that expect another input size than 224x224.
_NATIVE_SIZE = {"inception_v3": 299}
# Auxiliary heads make training-mode outputs tuples; a plain classifier is what a loop expects.
_NO_AUX = ("googlenet", "inception_v3")


def tv_names() -> list[str]:
    """The classification models torchvision offers."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_tv_name(name: str) -> None:
    """Refuse a name torchvision does not have, listing close matches."""
    names = tv_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
        hint = f"did you mean {', '.join('tv:' + c for c in close)}?" if close else "e.g. tv:resnet50"
        raise GradlabError(f"unknown torchvision model 'tv:{name}': {hint}")


def tv_input_size(name: str, in_channels: int = 3) -> tuple[int, int, int]:
    """(C, H, W) the model is designed for."""
    side = _NATIVE_SIZE.get(name, 224)
    return (in_channels, side, side)


def build_tv(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=num_classes)``."""
    import torchvision

    if in_channels != 3:
        raise GradlabError(
            f"tv:{name} takes 3 input channels, not {in_channels}: use 3-channel data or a gradlab model"
        )
    kwargs = {"aux_logits": False} if name in _NO_AUX else {}
    if name in _NO_AUX:
        kwargs["init_weights"] = True
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
