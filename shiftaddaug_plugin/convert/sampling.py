"""Per-step width sampling of the augmented network (docs/algorithms.md §4, NetAug).

Each training step the augmented model is one random member of the family: per channel group a multiplier from
``aug_expand_list`` (mid channels of inverted-residual blocks) or ``aug_width_mult_list`` (everything else that
widens). All layers writing a group get the same ``active_out_channels`` (residual-coupled blocks stay consistent);
depthwise convs and batch norms follow the width of their input. Fixed groups always keep their target width.
Width sampling is switched off for the last half of training (``width=False``) while expand sampling continues.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

from torch import nn

from .plan import ConversionPlan, planned_root

__all__ = ["set_widths", "set_max_widths", "set_target_widths", "sample_active_widths"]


def set_widths(model: nn.Module, widths: Mapping[int, int]) -> dict[int, int]:
    """Set ``active_out_channels`` of every converted conv from ``{group id: width}`` (missing groups: target).

    ``ValueError`` if a width lies outside ``[target, max]`` of its group."""
    root, plan = planned_root(model)
    full: dict[int, int] = {}
    for gid, group in plan.groups.items():
        w = int(widths.get(gid, group.channels))
        if not group.channels <= w <= group.max_channels:
            raise ValueError(f"width {w} for channel group {gid} is outside [{group.channels}, {group.max_channels}]")
        full[gid] = w
    for layer in plan.layers.values():
        if layer.kind in ("conv", "dwconv"):
            conv: Any = root.get_submodule(layer.name)  # a HybridConv2d
            conv.active_out_channels = full[layer.out_group]
    return full


def set_max_widths(model: nn.Module) -> dict[int, int]:
    """Every group at its maximum width (the widest augmented model)."""
    _, plan = planned_root(model)
    return set_widths(model, {gid: g.max_channels for gid, g in plan.groups.items()})


def set_target_widths(model: nn.Module) -> dict[int, int]:
    """Every group at its target width (augmented mode then computes exactly the target channels)."""
    _, plan = planned_root(model)
    return set_widths(model, {gid: g.channels for gid, g in plan.groups.items()})


def sample_widths(plan: ConversionPlan, rng: random.Random, width: bool = True, expand: bool = True) -> dict[int, int]:
    """``{group id: width}`` for one step, drawn with ``rng`` (same seed -> same widths on every DDP rank)."""
    out: dict[int, int] = {}
    for gid in sorted(plan.groups):
        group = plan.groups[gid]
        on = (group.kind == "mid" and expand) or (group.kind == "width" and width)
        mult = rng.choice(group.multipliers) if on and group.widened else 1.0
        out[gid] = group.width(mult, plan.config.divisor)
    return out


def sample_active_widths(model: nn.Module, rng: random.Random, width: bool = True,
                         expand: bool = True) -> dict[int, int]:
    """Draw and apply one augmented width configuration (docs/algorithms.md §4); returns ``{group id: width}``.

    Args:
        rng: a ``random.Random`` (seed it identically on all ranks).
        width: sample ``aug_width_mult_list`` for block outputs / stem / heads (``False``: target width).
        expand: sample ``aug_expand_list`` for mid channels (``False``: target width).
    """
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random (seeded identically on every rank), got {type(rng).__name__}")
    _, plan = planned_root(model)
    return set_widths(model, sample_widths(plan, rng, width, expand))
