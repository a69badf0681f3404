"""The operator table: every target operator, what it accepts and what it costs, in one place.

A hybrid layer's *target* channels use one operator (docs/algorithms.md §1-§3):

* ``shift``    DeepShift-Q: weights rounded to signed powers of two, inputs in fixed point (paper eq. 1-2);
* ``adder``    AdderNet: ``-sum |x - w|`` instead of a dot product (paper eq. 3);
* ``shiftadd`` a shift conv followed by an adder conv (ShiftAddNet's pairing);
* ``mult``     an ordinary (multiplicative) conv / linear layer.

The converter, the layers, the model variants, the NAS space and both cost models read :data:`OP_TABLE`; nothing
else lists operators. Light module: no torch import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

from .modes import ChoiceEnum

__all__ = ["Op", "OpSpec", "OpCost", "OP_TABLE", "SHIFT_KWARGS", "ADDER_KWARGS", "op_spec", "check_op_kwargs",
           "op_values", "linear_op_values"]

#: ``op_kwargs`` of the shift part (:class:`shiftaddaug_plugin.functional.ShiftQuantConfig` fields)
SHIFT_KWARGS = frozenset({"weight_bits", "act_int_bits", "act_frac_bits", "act_rounding", "quantize_input"})
#: ``op_kwargs`` of the adder part (AdderNet's adaptive learning-rate scale η)
ADDER_KWARGS = frozenset({"eta"})


class Op(ChoiceEnum):
    """Target operator of a hybrid layer (a ``str`` enum: ``Op.SHIFT == 'shift'``)."""

    SHIFT = "shift"
    ADDER = "adder"
    SHIFTADD = "shiftadd"
    MULT = "mult"


class OpCost(NamedTuple):
    """Operations of a layer's target part, bias excluded: ``macs`` counts multiply-accumulate *positions*."""

    mults: int
    adds: int
    shifts: int
    macs: int


@dataclass(frozen=True)
class OpSpec:
    """One row of the operator table.

    Attributes:
        op: the operator.
        kwargs: the ``op_kwargs`` keys it understands (others are rejected with the list of allowed keys).
        linear: whether a ``nn.Linear`` can be converted to it (only shift and mult linear layers exist).
        multiplication_free: whether the target part runs without multiplications.
        has_shift / has_adder: which multiplication-free parts it has (shift-add has both).
        cost_rule: the pricing rule in words (what :meth:`cost` computes).
    """

    op: Op
    kwargs: frozenset[str]
    linear: bool
    multiplication_free: bool
    has_shift: bool
    has_adder: bool
    cost_rule: str

    def cost(self, macs: int, adder_macs: int = 0) -> OpCost:
        """Target-part counts for ``macs`` positions of the main kernel (and ``adder_macs`` of the shift-add's
        adder conv): mult = 1 mult + 1 add, shift = 1 shift + 1 add, adder = 2 adds (``|x - w|`` and the sum)."""
        if self.op is Op.MULT:
            return OpCost(mults=macs, adds=macs, shifts=0, macs=macs)
        if self.op is Op.ADDER:
            return OpCost(mults=0, adds=2 * macs, shifts=0, macs=macs)
        extra = adder_macs if self.has_adder else 0
        return OpCost(mults=0, adds=macs + 2 * extra, shifts=macs, macs=macs + extra)


OP_TABLE: dict[Op, OpSpec] = {
    Op.SHIFT: OpSpec(Op.SHIFT, SHIFT_KWARGS, linear=True, multiplication_free=True, has_shift=True, has_adder=False,
                     cost_rule="1 shift + 1 add per MAC"),
    Op.ADDER: OpSpec(Op.ADDER, ADDER_KWARGS, linear=False, multiplication_free=True, has_shift=False, has_adder=True,
                     cost_rule="2 adds per MAC (|x - w| and the sum)"),
    Op.SHIFTADD: OpSpec(Op.SHIFTADD, SHIFT_KWARGS | ADDER_KWARGS, linear=False, multiplication_free=True,
                        has_shift=True, has_adder=True,
                        cost_rule="shift conv (1 shift + 1 add per MAC) then adder conv (2 adds per MAC)"),
    Op.MULT: OpSpec(Op.MULT, frozenset(), linear=True, multiplication_free=False, has_shift=False, has_adder=False,
                    cost_rule="1 mult + 1 add per MAC"),
}


def op_values(*, linear: bool = False) -> tuple[str, ...]:
    """The operator names (``linear=True``: only those a linear layer supports), in table order."""
    return tuple(spec.op.value for spec in OP_TABLE.values() if spec.linear or not linear)


def linear_op_values() -> tuple[str, ...]:
    """The operators a converted ``nn.Linear`` can use."""
    return op_values(linear=True)


def op_spec(op: Op | str, *, where: str = "op", linear: bool = False) -> OpSpec:
    """The table row of ``op``; ``ValueError`` naming ``where`` and the valid operators if it is unknown (or, with
    ``linear=True``, not available for linear layers)."""
    valid = op_values(linear=linear)
    try:
        member = Op.parse(op)
    except ValueError:
        member = None
    if member is None:
        raise ValueError(f"{where}: unknown op {op!r}; use one of {', '.join(map(repr, valid))}")
    if member.value not in valid:
        raise ValueError(f"{where}: op {member.value!r} has no linear layer; linear layers support "
                         f"{', '.join(map(repr, valid))}")
    return OP_TABLE[member]


def check_op_kwargs(where: str, op: Op | str, op_kwargs: Mapping[str, Any] | None, *,
                    linear: bool = False) -> dict[str, Any]:
    """``op_kwargs`` as a dict after checking every key is one ``op`` understands (``ValueError`` listing them)."""
    spec = op_spec(op, where=where, linear=linear)
    kwargs = dict(op_kwargs or {})
    unknown = sorted(set(kwargs) - spec.kwargs)
    if unknown:
        allowed = ", ".join(sorted(spec.kwargs)) or "none"
        raise ValueError(f"{where}(op={spec.op.value!r}) got unknown op_kwargs {unknown}; allowed keys: {allowed}")
    return kwargs
