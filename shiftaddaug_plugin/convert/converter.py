"""Rewrite: dense model -> hybrid training model (docs/algorithms.md §3; torchao ``quantize_(model, config,
filter_fn)``).

:func:`convert` = :func:`~.plan.analyze` (which channels widen, by how much, which operator) followed by one generic
walker that replaces every planned leaf through the exact-type handler table (:mod:`.handlers`). The plan is
stored on the result (``get_plan(model)``) for width sampling, channel sorting, BN recalibration and export.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .analysis import analyze, check_not_converted
from .config import ConvertConfig
from .handlers import handler_for, handler_table
from .plan import PLAN_ATTR, FilterFn, ForwardFn
from .sampling import set_max_widths

__all__ = ["convert", "set_submodule"]


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the sub-module at dotted path ``name`` (works inside ``Sequential``/``ModuleList``/``ModuleDict``)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if child not in parent._modules:
        raise ValueError(f"'{name}' is not a registered sub-module and cannot be replaced")
    parent._modules[child] = new


def convert(
    model: nn.Module,
    config: ConvertConfig | None = None,
    *,
    filter_fn: FilterFn | None = None,
    example_input: Any = None,
    inplace: bool = False,
    forward_fn: ForwardFn | None = None,
) -> nn.Module:
    """Convert a dense model into a hybrid ShiftAddAug model (ShiftAddAug eq. 4, docs/algorithms.md §3-§4).

    Every ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d`` / timm ``BatchNormAct2d`` the analysis reached (and
    ``filter_fn(module, name)`` accepts) becomes its hybrid counterpart at the group's **maximum** width; the dense
    weights fill the target (leading) slice, augmented slices are freshly initialised (see :mod:`.handlers`). Layers
    excluded by ``filter_fn`` and all other modules stay untouched. Widths start at the maximum
    (:func:`~.sampling.set_max_widths`); hybrid layers start in ``Mode.AUGMENTED``.

    Args:
        model: dense model; copied first unless ``inplace=True``.
        config: :class:`ConvertConfig` (defaults if ``None``).
        filter_fn: ``(module, name) -> bool``, ``False`` leaves a leaf alone (its channels keep target width).
        example_input / forward_fn: the traced forward pass, see :func:`~.plan.analyze`.
        inplace: rewrite ``model`` itself.

    Returns the hybrid model (``model`` itself when ``inplace``). Raises ``ValueError`` for an already converted
    model and for unsupported layers (see :func:`~.plan.analyze`).
    """
    config = ConvertConfig() if config is None else config
    check_not_converted(model)
    if not inplace:
        model = copy.deepcopy(model)
    plan = analyze(model, config, example_input, filter_fn=filter_fn, forward_fn=forward_fn)
    table = handler_table()
    for name, layer in plan.layers.items():
        old = model.get_submodule(name)
        set_submodule(model, name, handler_for(old, table).build(old, layer, plan))
    setattr(model, PLAN_ATTR, plan)
    set_max_widths(model)
    return model
