"""Cost model (docs/algorithms.md §8): multiplications / additions / shifts per layer, parameters and their bit widths,
peak activation memory and an energy estimate; text/Markdown/CSV/JSON reports; accuracy-vs-energy Pareto plots.

    from shiftaddaug_plugin.cost import count_ops, format_report
    report = count_ops(model, (3, 32, 32), precision="fp32")
    print(format_report(report, "md"))

Conventions (which op counts as what) are documented in ``shiftaddaug_plugin.cost.rules``; the per-op energy
table in ``shiftaddaug_plugin.cost.energy``. The plot helpers import matplotlib on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .counter import (
    CostModelWarning,
    CostReport,
    LayerCost,
    count_ops,
    register_cost_rule,
)
from .energy import DEFAULT_ENERGY_TABLE, PRECISIONS, EnergyTable, OpEnergy
from .report import FORMATS, format_energy, format_report
from .rules import CostContext, LayerEstimate, OpCounts

__all__ = [
    "CostContext", "CostModelWarning", "CostReport", "DEFAULT_ENERGY_TABLE", "EnergyTable", "FORMATS", "LayerCost",
    "LayerEstimate", "OpCounts", "OpEnergy", "PRECISIONS", "count_ops", "format_energy", "format_report",
    "load_runs", "pareto_front", "plot_pareto", "register_cost_rule",
]

_LAZY = {"load_runs", "pareto_front", "plot_pareto"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.plot"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
