"""Export: hybrid training model -> slim multiplication-free target model (DESIGN §2.3, §5).

:func:`export` is pure: it deep-copies the model, replaces every hybrid layer by its ``export()`` (the plain target
layer: ``ShiftConv2d`` / ``AdderConv2d`` / ``ShiftAddConv2d`` / ``ShiftLinear`` / ``nn.BatchNorm2d`` / timm
``BatchNormAct2d``, or ``nn.Conv2d``/``nn.Linear`` for layers kept multiplicative) and drops the conversion plan.
The result computes what the hybrid model computes in ``Mode.TARGET``; its ``state_dict`` holds tensors only.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from .handlers import hybrid_types
from .plan import PLAN_ATTR, ConversionPlan

__all__ = ["export", "ExportInfo", "EXPORT_INFO_ATTR"]

EXPORT_INFO_ATTR = "_shiftaddaug_export_info"


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`~.audit.audit` needs to know about an exported model (plain Python, not in the state dict)."""

    kept_mult: tuple[str, ...]  #: layers kept multiplicative by the conversion config
    excluded: tuple[str, ...]  #: layers the user left alone with ``filter_fn``


def _replace(parent: nn.Module, types: tuple[type, ...]) -> int:
    count = 0
    for name, child in list(parent._modules.items()):
        if child is None:
            continue
        if isinstance(child, types):
            parent._modules[name] = child.export()
            count += 1
        else:
            count += _replace(child, types)
    return count


def export(model: nn.Module) -> nn.Module:
    """A new slim target model; ``model`` is not modified. ``ValueError`` if it contains no hybrid layer."""
    plan = getattr(model, PLAN_ATTR, None)
    out = copy.deepcopy(model)
    if _replace(out, hybrid_types()) == 0:
        raise ValueError(f"{type(model).__name__} contains no hybrid layer to export; export the model returned "
                         "by shiftaddaug_plugin.convert.convert(...)")
    if hasattr(out, PLAN_ATTR):
        delattr(out, PLAN_ATTR)
    if isinstance(plan, ConversionPlan):
        setattr(out, EXPORT_INFO_ATTR, ExportInfo(kept_mult=plan.kept_mult, excluded=plan.excluded))
    return out
