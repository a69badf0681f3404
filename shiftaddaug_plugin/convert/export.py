"""Export: hybrid training model -> slim multiplication-free target model (docs/algorithms.md §3, §5).

:func:`export` is pure: it deep-copies the model, replaces every *exportable* module by the result of its
``export()`` and drops the conversion plan. The result computes what the training model computes in
``Mode.TARGET``; its ``state_dict`` holds tensors only.

Export protocol (walked top-down, an exportable module's children are not visited): a module is exportable when it
is a hybrid layer or, generically, carries a ``mode`` (:class:`~shiftaddaug_plugin.modes.Mode`, the attribute
:func:`~shiftaddaug_plugin.modes.set_mode` switches) and defines ``export()``. ``export()`` returns

* the plain target module that replaces it (hybrid layers: ``ShiftConv2d`` / ``AdderConv2d`` / ``ShiftAddConv2d`` /
  ``ShiftLinear`` / ``nn.BatchNorm2d`` / timm ``BatchNormAct2d``, or ``nn.Conv2d``/``nn.Linear`` for layers kept
multiplicative), or * ``None``: the module exists only for training and is removed; its parent must be an
``nn.Sequential``, which is
  re-indexed (``0, 1, ...``) so the exported ``state_dict`` keys are those of the network built without it (NAS
  depth augmentation, :class:`shiftaddaug_plugin.nas.stage2.DepthAugBlock`).

The conversion plan's kept-multiplicative / excluded layer names are carried over to the exported names (layers
inside removed modules are dropped), so :func:`~.audit.audit` of the exported model stays exact.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

from torch import nn

from ..modes import is_hybrid
from .plan import PLAN_ATTR, ConversionPlan

__all__ = ["export", "is_exportable", "ExportInfo", "EXPORT_INFO_ATTR"]

EXPORT_INFO_ATTR = "_shiftaddaug_export_info"


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`~.audit.audit` needs to know about an exported model (plain Python, not in the state dict)."""

    kept_mult: tuple[str, ...]  #: layers kept multiplicative by the conversion config
    excluded: tuple[str, ...]  #: layers the user left alone with ``filter_fn``


def is_exportable(module: nn.Module) -> bool:
    """Whether :func:`export` replaces ``module`` by its ``export()`` (module docstring: export protocol)."""
    return is_hybrid(module) and callable(getattr(module, "export", None))


def _replace(parent: nn.Module, prefix: str = "") -> int:
    """Export the exportable modules below ``parent`` in place; returns how many were exported."""
    count = 0
    dropped: list[str] = []
    for name, child in list(parent._modules.items()):
        if child is None:
            continue
        if is_exportable(child):
            new = child.export()  # type: ignore[operator]  # is_exportable: a callable export()
            if new is None:
                dropped.append(name)
            else:
                parent._modules[name] = new
            count += 1
        else:
            count += _replace(child, f"{prefix}{name}.")
    if dropped:
        where = prefix[:-1] or "the model"
        if not isinstance(parent, nn.Sequential):
            raise ValueError(f"export: {', '.join(repr(prefix + n) for n in dropped)} returned None from export() "
                             f"(remove me) but its parent {where!r} is a {type(parent).__name__}, not an "
                             "nn.Sequential; only members of an nn.Sequential can be removed")
        kept = [m for n, m in parent._modules.items() if n not in dropped]
        parent._modules.clear()
        for i, module in enumerate(kept):
            parent._modules[str(i)] = module
    return count


def _renamed(names: Iterable[str], before: dict[str, nn.Module], after: nn.Module) -> tuple[str, ...]:
    """Exported names of the layers ``names`` (original names) whose parent module survived the export."""
    new_name = {id(m): n for n, m in after.named_modules()}
    out: list[str] = []
    for name in names:
        parent, _, leaf = name.rpartition(".")
        module = before.get(parent)
        if module is not None and id(module) in new_name:
            new_parent = new_name[id(module)]
            out.append(f"{new_parent}.{leaf}" if new_parent else leaf)
    return tuple(out)


def export(model: nn.Module) -> nn.Module:
    """A new slim target model; ``model`` is not modified. ``ValueError`` if it contains no exportable module."""
    plan = getattr(model, PLAN_ATTR, None)
    out = copy.deepcopy(model)
    before = dict(out.named_modules())  # keeps every original module alive: ids stay unique while renaming
    if _replace(out) == 0:
        raise ValueError(f"{type(model).__name__} contains no hybrid layer to export; export the model returned "
                         "by shiftaddaug_plugin.convert.convert(...)")
    if hasattr(out, PLAN_ATTR):
        delattr(out, PLAN_ATTR)
    if isinstance(plan, ConversionPlan):
        setattr(out, EXPORT_INFO_ATTR, ExportInfo(kept_mult=_renamed(plan.kept_mult, before, out),
                                                  excluded=_renamed(plan.excluded, before, out)))
    return out
