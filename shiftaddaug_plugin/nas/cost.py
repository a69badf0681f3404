"""Hardware cost of a searched architecture and the constraints of the search (docs/algorithms.md §7 step 3, §8).

:func:`arch_cost` runs :func:`shiftaddaug_plugin.cost.count_ops` once on the plain multiplicative timm model of an
:class:`~shiftaddaug_plugin.nas.space.Arch` and re-prices every conv / linear row with the operator the target
network will use there (``Arch.base_op`` outside the searched blocks, the block's ``op`` inside; the stem conv
stays multiplicative, linear layers are shift or multiplicative, as the converter does). The re-pricing applies the
cost model's own conventions (``shiftaddaug_plugin.cost.rules``; docs/algorithms.md §8) to the counted MACs ``M`` and
bias additions ``B`` of the row:

* ``mult``: ``M`` mults + ``M + B`` adds;  ``shift``: ``M`` shifts + ``M + B`` adds;  ``adder``: ``2M + B`` adds;
* ``shiftadd``: the shift part as above plus an ``O -> O`` adder conv (same kernel and groups, stride 1) on the
  output positions: ``2 * out_elements * (O / groups) * k^2`` adds (and its weights in ``params``).

This avoids converting every candidate (tens of milliseconds instead of a converter trace); a test checks it
against ``count_ops`` of the really converted and exported network. Peak activation memory is the counter's
(largest ``input + output`` of one layer at 32-bit activations for ``fp32``; shift layers' 16+16-bit fixed point
input has the same width). BatchNorm is folded (0 ops).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

from torch import nn

from shiftaddaug_plugin.cost import DEFAULT_ENERGY_TABLE, count_ops

from ..ops import OP_TABLE, Op
from .space import Arch

__all__ = ["COST_METRICS", "ArchCost", "Constraints", "layer_op", "arch_cost"]

#: metrics a constraint or the cost objective can use (``ArchCost`` attribute names)
COST_METRICS: tuple[str, ...] = ("energy_uj", "macs", "mults", "params", "peak_kb")


@dataclass(frozen=True)
class ArchCost:
    """Totals of one network for one input (batch 1). ``macs``: multiply-accumulate positions of the
    multiplicative network (the usual size measure, whatever the operators; a ``shiftadd`` layer's extra adder stage
    is not included there but in ``adds``)."""

    macs: int
    mults: int
    adds: int
    shifts: int
    params: int
    peak_kb: float  #: peak activation memory, KiB
    energy_uj: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Constraints:
    """Upper limits of the hardware cost; ``None`` = unconstrained. A candidate is feasible when every set limit
    holds (``<=``)."""

    max_macs: float | None = None
    max_mults: float | None = None
    max_params: float | None = None
    max_peak_kb: float | None = None
    max_energy_uj: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Constraints.{f.name}={value!r} must be a finite number >= 0 (or None)")

    def limits(self) -> dict[str, float]:
        """``{metric: limit}`` of the set limits."""
        return {f.name[4:]: float(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    def violations(self, cost: ArchCost | Mapping[str, float]) -> list[float]:
        """Per set limit ``value / limit - 1`` (``<= 0`` means met; Optuna's ``constraints_func`` convention)."""
        values = cost.to_dict() if isinstance(cost, ArchCost) else cost
        out = []
        for metric, limit in self.limits().items():
            value = float(values[metric])
            out.append(value / limit - 1.0 if limit > 0 else (value if value > 0 else -1.0))
        return out

    def violation(self, cost: ArchCost | Mapping[str, float]) -> float:
        """The largest violation (``-1`` when nothing is constrained)."""
        return max(self.violations(cost), default=-1.0)

    def satisfied(self, cost: ArchCost | Mapping[str, float]) -> bool:
        values = cost.to_dict() if isinstance(cost, ArchCost) else cost
        return all(float(values[m]) <= limit for m, limit in self.limits().items())

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def layer_op(name: str, module: nn.Module, arch: Arch) -> str:
    """Target operator of layer ``name`` of the timm model of ``arch`` (module docstring)."""
    if name == "conv_stem":
        return "mult"
    parts = name.split(".")
    op = arch.base_op
    if len(parts) > 3 and parts[0] == "blocks" and parts[1].isdigit() and int(parts[1]) >= 1:
        stage, block = int(parts[1]) - 1, int(parts[2])
        op = arch.stages[stage].blocks[block].op
    if isinstance(module, nn.Linear):
        return "mult" if op == "mult" else "shift"
    return op


def arch_cost(model: nn.Module, arch: Arch, input_shape: Sequence[int], *, precision: str = "fp32",
              energy_table: Any = None) -> ArchCost:
    """Cost of ``arch``'s target network (module docstring). ``model``: its plain multiplicative timm model (e.g.
    ``Supernet.extract(arch)``); ``input_shape``: ``(C, H, W)``."""

    table = DEFAULT_ENERGY_TABLE if energy_table is None else energy_table
    report = count_ops(model, tuple(input_shape), precision=precision, energy_table=table, warn=True)
    if report.uncounted:
        raise ValueError(f"cost model cannot count {report.uncounted}; the arch's model has layers without a cost rule")
    modules = dict(model.named_modules())
    mults = adds = shifts = params = 0
    energy = 0.0
    for row in report.layers:
        module = modules.get(row.name)
        m, a, s, p = row.mults, row.adds, row.shifts, row.params
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            op = layer_op(row.name, module, arch)
            bias = row.adds - row.macs
            macs = row.macs
            spec = OP_TABLE[Op(op)]
            adder_macs = 0
            if spec.has_shift and spec.has_adder:  # shift-add: the adder conv after the shift conv
                o, groups = module.out_channels, module.groups
                k2 = math.prod(module.kernel_size)
                adder_macs = math.prod(row.output_shape) * (o // groups) * k2
                p += o * (o // groups) * k2
            if spec.multiplication_free:
                c = spec.cost(macs, adder_macs)
                m, a, s = c.mults, c.adds + bias, c.shifts
        mults, adds, shifts, params = mults + m, adds + a, shifts + s, params + p
        energy += table.energy_pj(m, a, s, report.precision)
    return ArchCost(macs=report.macs, mults=mults, adds=adds, shifts=shifts, params=params,
                    peak_kb=report.peak_activation_bytes / 1024.0, energy_uj=energy * 1e-6)
