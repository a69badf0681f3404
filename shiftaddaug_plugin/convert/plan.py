"""The conversion plan: which channel groups widen, and what each convertible layer becomes (docs/algorithms.md §3).

:func:`shiftaddaug_plugin.convert.analyze` (:mod:`.analysis`) builds a :class:`ConversionPlan`; the converter stores it
on the converted model (``PLAN_ATTR``) and width sampling, channel sorting, BN recalibration and export read it back
with :func:`get_plan` / :func:`planned_root`. Plain data: no tracing here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..protocol import unwrap
from .config import ConvertConfig, augmented_width

__all__ = ["ChannelGroup", "LayerPlan", "ConversionPlan", "get_plan", "planned_root", "PLAN_ATTR", "FilterFn",
           "ForwardFn"]

PLAN_ATTR = "_shiftaddaug_plan"
FilterFn = Callable[[nn.Module, str], bool]
ForwardFn = Callable[[nn.Module, Any], Any]


# ================================================================================================= plan objects
@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must share one width (one entry of the plan)."""

    gid: int
    channels: int  #: target width
    kind: str  #: 'mid' | 'width' | 'fixed'
    multipliers: tuple[float, ...]  #: () for fixed groups
    max_channels: int
    producers: tuple[str, ...]  #: dense convs writing these channels
    depthwise: tuple[str, ...]  #: depthwise convs inside the group
    norms: tuple[str, ...]  #: batch norms of the group
    consumers: tuple[str, ...]  #: dense convs / linears reading the group
    project: tuple[str, ...]  #: consumers that do not read a globally pooled copy (importance for sorting)
    residual: bool  #: joined by an elementwise add of two activations
    fixed_reasons: tuple[str, ...]

    @property
    def widened(self) -> bool:
        return self.max_channels > self.channels

    def width(self, multiplier: float, divisor: int) -> int:
        """Active width at ``multiplier`` (``channels`` for fixed groups)."""
        if self.kind == "fixed":
            return self.channels
        return min(self.max_channels, augmented_width(self.channels, multiplier, divisor))


@dataclass(frozen=True)
class LayerPlan:
    """One convertible leaf: its kind, groups, widths and target operator."""

    name: str
    kind: str  #: 'conv' | 'dwconv' | 'linear' | 'bn'
    type_name: str
    in_group: int
    out_group: int
    target_in: int
    target_out: int
    max_in: int
    max_out: int
    op: str | None  #: None for batch norms
    role: str  #: 'first' (stem conv), 'output' (classifier / logits), '' otherwise


@dataclass
class ConversionPlan:
    """Channel groups and per-layer decisions of one model (printable; stored on the converted model)."""

    config: ConvertConfig
    groups: dict[int, ChannelGroup]
    layers: dict[str, LayerPlan]
    excluded: tuple[str, ...] = ()  #: convertible-type leaves left alone by ``filter_fn``

    @property
    def kept_mult(self) -> tuple[str, ...]:
        """Converted conv/linear layers whose target part stays multiplicative by configuration."""
        return tuple(n for n, lp in self.layers.items() if lp.op == "mult")

    def groups_of_kind(self, kind: str) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.kind == kind]

    def layer_table(self) -> str:
        """One line per converted layer: kind, op, target and max widths."""
        rows = [f"{'layer':<48} {'kind':<6} {'op':<8} {'target':>11} {'max':>11} role"]
        for lp in self.layers.values():
            rows.append(f"{lp.name:<48} {lp.kind:<6} {lp.op or '-':<8} {lp.target_in:>5}->{lp.target_out:<5} "
                        f"{lp.max_in:>5}->{lp.max_out:<5} {lp.role}")
        return "\n".join(rows)

    def __str__(self) -> str:
        kinds = {k: len(self.groups_of_kind(k)) for k in ("mid", "width", "fixed")}
        head = (f"ConversionPlan: {len(self.layers)} layers, {len(self.groups)} channel groups "
                f"({kinds['mid']} mid, {kinds['width']} width, {kinds['fixed']} fixed); op={self.config.op}, "
                f"width x{list(self.config.aug_width_mult_list)}, expand x{list(self.config.aug_expand_list)}")
        rows = [head, f"{'gid':>4} {'kind':<6} {'target':>6} {'max':>5}  layers / reason"]
        for g in sorted(self.groups.values(), key=lambda g: g.gid):
            members = [*g.producers, *g.depthwise, *g.norms]
            shown = ", ".join(members[:4]) + (f", ... (+{len(members) - 4})" if len(members) > 4 else "")
            why = f"  [fixed: {'; '.join(g.fixed_reasons[:2])}]" if g.kind == "fixed" else ""
            rows.append(f"{g.gid:>4} {g.kind:<6} {g.channels:>6} {g.max_channels:>5}  {shown or '-'}{why}")
        if self.kept_mult:
            rows.append(f"kept multiplicative by config: {', '.join(self.kept_mult)}")
        if self.excluded:
            rows.append(f"left alone (filter_fn): {', '.join(self.excluded)}")
        return "\n".join(rows)


def get_plan(model: nn.Module) -> ConversionPlan:
    """The plan stored by :func:`~shiftaddaug_plugin.convert.convert` on ``model`` (or on ``model.module`` for
    DDP / EMA wrappers); ``ValueError`` if the model was not converted."""
    for candidate in (model, unwrap(model)):
        plan = getattr(candidate, PLAN_ATTR, None)
        if isinstance(plan, ConversionPlan):
            return plan
    raise ValueError(f"{type(model).__name__} carries no conversion plan; convert it first with "
                     "shiftaddaug_plugin.convert.convert(model, config)")


def planned_root(model: nn.Module) -> tuple[nn.Module, ConversionPlan]:
    """(module whose ``named_modules`` names match the plan, plan): unwraps DDP/EMA ``.module`` wrappers."""
    plan = get_plan(model)
    root = model if getattr(model, PLAN_ATTR, None) is plan else unwrap(model)
    return root, plan
