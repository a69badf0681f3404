"""Energy per arithmetic operation (docs/algorithms.md §8).

Values in picojoules for a 45 nm process (Horowitz, ISSCC 2014), as used by ShiftAddNet (NeurIPS 2020) and
ShiftAddNAS (ICML 2022) to compare multiplicative, shift and adder networks:

========  ===========  ==========  =====================================
column    mult (pJ)    add (pJ)    shift (pJ)
========  ===========  ==========  =====================================
fp32      3.7          0.9         0.13  (32-bit shift: a shift needs a fixed-point operand)
int32     3.1          0.1         0.13
int8      0.2          0.03        0.024
========  ===========  ==========  =====================================

One column applies to a whole network (``count_ops(..., precision=...)``). Every value can be overridden:
``DEFAULT_ENERGY_TABLE.override({"int8": {"mult": 0.25}})`` or, from the CLI, a JSON file of the same shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

PRECISIONS: tuple[str, ...] = ("fp32", "int32", "int8")
OP_KINDS: tuple[str, ...] = ("mult", "add", "shift")

#: operand width in bits of each precision column (parameter and activation memory of non-shift layers)
PRECISION_BITS: dict[str, int] = {"fp32": 32, "int32": 32, "int8": 8}


@dataclass(frozen=True)
class OpEnergy:
    """Energy of one multiplication, addition and shift, in picojoules."""

    mult: float
    add: float
    shift: float

    def __post_init__(self) -> None:
        for kind in OP_KINDS:
            value = getattr(self, kind)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"energy of a {kind!r} must be a finite number >= 0 (pJ), got {value!r}")


def _default_columns() -> dict[str, OpEnergy]:
    return {
        "fp32": OpEnergy(mult=3.7, add=0.9, shift=0.13),
        "int32": OpEnergy(mult=3.1, add=0.1, shift=0.13),
        "int8": OpEnergy(mult=0.2, add=0.03, shift=0.024),
    }


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energy (pJ) for each precision column; see the module docstring for the defaults."""

    columns: Mapping[str, OpEnergy] = field(default_factory=_default_columns)

    def column(self, precision: str) -> OpEnergy:
        """The ``OpEnergy`` of ``precision``; ``ValueError`` naming the valid columns otherwise."""
        key = check_precision(precision, self.columns)
        return self.columns[key]

    def energy_pj(self, mults: int, adds: int, shifts: int, precision: str) -> float:
        """Energy in pJ of the given operation counts in column ``precision``."""
        col = self.column(precision)
        return mults * col.mult + adds * col.add + shifts * col.shift

    def override(self, overrides: Mapping[str, Mapping[str, float]]) -> "EnergyTable":
        """A new table with some values replaced, e.g. ``{"int8": {"mult": 0.25}}``. New columns need all three
        kinds (mult, add, shift)."""
        if not isinstance(overrides, Mapping):
            raise TypeError(f"energy overrides must be a mapping {{precision: {{op: pJ}}}}, got "
                            f"{type(overrides).__name__}")
        columns = dict(self.columns)
        for precision, values in overrides.items():
            if not isinstance(values, Mapping):
                raise TypeError(f"energy overrides for {precision!r} must be a mapping {{op: pJ}}, got {values!r}")
            unknown = set(values) - set(OP_KINDS)
            if unknown:
                raise ValueError(
                    f"unknown operation(s) {sorted(unknown)} in energy overrides for {precision!r}; use "
                    f"{list(OP_KINDS)}"
                )
            base = columns.get(precision)
            if base is None:
                missing = [k for k in OP_KINDS if k not in values]
                if missing:
                    raise ValueError(
                        f"new energy column {precision!r} needs values for {list(OP_KINDS)}; missing {missing}"
                    )
                columns[precision] = OpEnergy(**{k: float(values[k]) for k in OP_KINDS})
            else:
                merged = {k: float(values.get(k, getattr(base, k))) for k in OP_KINDS}
                columns[precision] = OpEnergy(**merged)
        return EnergyTable(columns=columns)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """Plain ``{precision: {op: pJ}}`` (JSON-serialisable)."""
        return {p: {k: getattr(e, k) for k in OP_KINDS} for p, e in self.columns.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> "EnergyTable":
        """Defaults overridden by ``data`` (same shape as ``to_dict``)."""
        return cls().override(data)


def check_precision(precision: str, columns: Mapping[str, object] | None = None) -> str:
    """Normalise a precision name (case-insensitive); ``ValueError`` listing the valid ones otherwise."""
    valid = tuple(columns) if columns is not None else PRECISIONS
    key = str(precision).lower()
    if key not in valid:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(map(repr, valid))}")
    return key


DEFAULT_ENERGY_TABLE = EnergyTable()
