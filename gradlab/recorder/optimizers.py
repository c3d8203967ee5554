"""The optimizer whose step the recorder hooks, found inside the wrappers frameworks put around it.

Hugging Face Accelerate (``AcceleratedOptimizer``, also what the Trainer holds) and Lightning
(``LightningOptimizer``) wrap the user's optimizer. Accelerate's wrapper derives from
``torch.optim.Optimizer`` without running its constructor, so it has the method
``register_step_pre_hook`` but not the hook tables it needs. Both call the inner optimizer's
``step()`` exactly when a real update happens (after accumulation; not on the steps a
GradScaler skips), so the inner optimizer is the one to hook.
"""

from __future__ import annotations

from typing import Any

import torch

from gradlab.errors import GradlabError

#: Attributes under which known wrappers keep the optimizer they wrap.
_INNER = ("optimizer", "_optimizer")


def _hookable(opt: Any) -> bool:
    return isinstance(opt, torch.optim.Optimizer) and "_optimizer_step_pre_hooks" in vars(opt)


def resolve_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """``optimizer`` itself when its step can be hooked, else the optimizer it wraps."""
    opt = optimizer
    for _ in range(4):
        if _hookable(opt):
            return opt
        inner = next((vars(opt).get(a) for a in _INNER if a in vars(opt)), None) if hasattr(opt, "__dict__") \
            else None
        if inner is None or inner is opt:
            break
        opt = inner
    raise GradlabError(
        f"optimizer= must be a torch.optim.Optimizer (or a wrapper holding one as .optimizer), got "
        f"{type(optimizer).__name__}: pass the optimizer whose step() should trigger recording, or leave it out"
    )


def closure_of(args: tuple, kwargs: dict) -> tuple[Any, bool]:
    """The ``closure`` passed to ``optimizer.step``, and whether it came as a keyword.

    ``args`` as a step pre-hook sees them: the optimizer itself first, then step's arguments.
    """
    if kwargs.get("closure") is not None:
        return kwargs["closure"], True
    if len(args) > 1 and callable(args[1]):
        return args[1], False
    return None, False
