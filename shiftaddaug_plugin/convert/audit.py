"""Audit: which layers of a (converted or exported) model still multiply (docs/ARCHITECTURE.md, §8).

Multiplicative layers are ``nn.Conv*`` / ``nn.Linear`` modules that are not shift / adder / shift-add layers, and
hybrid layers whose target part is multiplicative (``op='mult'`` or ``mf_enabled=False``). Batch norms are not
counted (they fold into the preceding layer's bias/scale at deployment). Layers kept multiplicative by the
conversion config (stem, ``op_overrides``, ``keep_classifier_mult``) or excluded by ``filter_fn`` are *allowed* and
listed; any other multiplicative layer makes :func:`audit` raise when ``expect_mult_free`` is set.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..layers.adder import AdderConv2d
from ..layers.hybrid import HybridConv2d, HybridLinear
from ..layers.shift import ShiftConv2d, ShiftLinear
from ..layers.shiftadd import ShiftAddConv2d
from .export import EXPORT_INFO_ATTR, ExportInfo
from .plan import PLAN_ATTR, ConversionPlan

__all__ = ["audit", "AuditReport", "AuditEntry"]


@dataclass(frozen=True)
class AuditEntry:
    name: str
    type_name: str
    allowed: bool
    why: str  #: why it is allowed ('kept mult by config', 'excluded by filter_fn', 'allow=...') or ''


@dataclass(frozen=True)
class AuditReport:
    multiplicative: tuple[AuditEntry, ...]
    multiplication_free: tuple[str, ...]

    @property
    def unexpected(self) -> tuple[AuditEntry, ...]:
        return tuple(e for e in self.multiplicative if not e.allowed)

    @property
    def allowed(self) -> tuple[AuditEntry, ...]:
        return tuple(e for e in self.multiplicative if e.allowed)

    def __str__(self) -> str:
        lines = [f"audit: {len(self.multiplication_free)} multiplication-free layers, {len(self.multiplicative)} "
                 f"multiplicative ({len(self.allowed)} allowed, {len(self.unexpected)} unexpected)"]
        lines += [f"  {e.name} ({e.type_name}){': ' + e.why if e.allowed else ': UNEXPECTED'}" for e in
                  self.multiplicative]
        return "\n".join(lines)


def _mf_types() -> tuple[type, ...]:

    return (ShiftConv2d, ShiftLinear, AdderConv2d, ShiftAddConv2d)


def _is_multiplicative(module: nn.Module, mf_types: tuple[type, ...]) -> bool | None:
    """True / False for conv & linear layers, None for anything else."""

    if isinstance(module, (HybridConv2d, HybridLinear)):
        return module.op == "mult" or not module.mf_enabled
    if isinstance(module, mf_types):
        return False
    if isinstance(module, (_ConvNd, nn.Linear)):
        return True
    return None


def audit(
    model: nn.Module,
    expect_mult_free: bool = True,
    allow: Iterable[str] | ConversionPlan | None = None,
) -> AuditReport:
    """List every multiplicative layer of ``model``; raise ``ValueError`` naming the unexpected ones.

    Args:
        model: an exported model (``export(...)``; it remembers what the config kept multiplicative) or a
            converted hybrid model (its plan says the same).
        expect_mult_free: raise if a multiplicative layer is neither kept by the config nor allowed.
        allow: extra module names or regular expressions (``re.fullmatch``) allowed to stay multiplicative, or a
            :class:`ConversionPlan` whose kept/excluded layers are allowed.
    """
    reasons: dict[str, str] = {}
    info = getattr(model, EXPORT_INFO_ATTR, None)
    plan = getattr(model, PLAN_ATTR, None)
    patterns: list[str] = []
    sources: list[ExportInfo | ConversionPlan] = [s for s in (info, plan) if s is not None]
    if isinstance(allow, ConversionPlan):
        sources.append(allow)
    elif allow is not None:
        if isinstance(allow, str):
            raise TypeError("allow must be a list of module names / regexes, not a single string; wrap it in a list")
        patterns = list(allow)
    for src in sources:
        reasons.update({n: "kept multiplicative by config" for n in src.kept_mult})
        reasons.update({n: "excluded by filter_fn" for n in src.excluded})
    mf_types = _mf_types()
    mult: list[AuditEntry] = []
    free: list[str] = []
    for name, module in model.named_modules():
        verdict = _is_multiplicative(module, mf_types)
        if verdict is None:
            continue
        if not verdict:
            free.append(name)
            continue
        why = reasons.get(name, "")
        if not why and any(re.fullmatch(p, name) or p == name for p in patterns):
            why = "allowed by allow="
        mult.append(AuditEntry(name, type(module).__name__, bool(why), why))
    report = AuditReport(tuple(mult), tuple(free))
    if expect_mult_free and report.unexpected:
        names = ", ".join(f"'{e.name}' ({e.type_name})" for e in report.unexpected[:10])
        more = f" (+{len(report.unexpected) - 10} more)" if len(report.unexpected) > 10 else ""
        raise ValueError(f"{len(report.unexpected)} layer(s) are still multiplicative although the model should be "
                         f"multiplication-free: {names}{more}. Convert them, or list them in allow=[...] if that is "
                         "intended")
    return report
