"""What a cost rule returns and receives: operation counts, the per-layer estimate, the counting context, and the
shape helpers the rules share (docs/algorithms.md §8). The rules themselves: :mod:`.rules`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

# ------------------------------------------------------------------------------------------------ data types


@dataclass
class OpCounts:
    """Operation counts of one layer (or a total)."""

    mults: int = 0
    adds: int = 0
    shifts: int = 0
    macs: int = 0  #: MAC positions of conv/linear-like layers whatever their operator (for cross-checks)

    def __add__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(
            self.mults + other.mults, self.adds + other.adds, self.shifts + other.shifts, self.macs + other.macs
        )


@dataclass
class LayerEstimate:
    """What a rule reports for one call of a module."""

    op: str  #: short description of the operator, e.g. 'conv', 'shift conv', 'hybrid conv (shift)'
    counts: OpCounts
    params: int = 0  #: parameters the call actually used (target slice for hybrid layers)
    param_bits: int = 0  #: sum over those parameters of their storage bit width
    weight_bits: tuple[int, ...] = ()  #: distinct weight bit widths used
    act_bits: int = 32  #: activation bit width (input of the layer)
    note: str = ""
    mf_layer: bool = False  #: an MF operator (shift / adder / shift-add, or a hybrid layer's MF target part)
    in_place: bool = False  #: element-wise and fusable in place (BN, activations): no extra activation memory


@dataclass(frozen=True)
class CostContext:
    """Settings shared by all rules of one ``count_ops`` call."""

    precision_bits: int = 32  #: bit width of non-shift weights and activations
    fold_bn: bool = True
    prev_mf: bool = False  #: the previously counted layer was an MF operator (BN-folding note)


Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor, CostContext], "LayerEstimate | None"]


@dataclass(frozen=True)
class CostRule:
    """A cost formula for one module type; ``counts_children``: sub-modules are counted by their own rules."""

    fn: Rule
    counts_children: bool = False


#: Modules that are pure data movement / no-ops at inference (no row, no memory).
NOOP = "noop"

# ------------------------------------------------------------------------------------------------ helpers


def type_key(cls: type) -> str:
    """Table key of a class: ``module.QualName`` (exact type, no import of the defining package needed)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _own_params(module: Any) -> list[torch.Tensor]:
    return [p for p in module.parameters(recurse=False)]


def _bias_numel(module: Any) -> int:
    bias = getattr(module, "bias", None)
    return int(bias.numel()) if isinstance(bias, torch.Tensor) else 0


def _kernel_numel(module: Any) -> int:
    return int(math.prod(module.kernel_size))


def _batched(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Add the batch dimension of an unbatched conv/pool input (``C, *spatial``)."""
    return x.unsqueeze(0) if x.dim() == spatial_dims + 1 else x


def _to_tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _scale_op(counts: OpCounts, divisor: int, n_outputs: int) -> None:
    """Add ``n_outputs`` multiplications by 1/divisor: shifts when divisor is a power of two, mults otherwise."""
    if divisor == 1:
        return
    if _is_power_of_two(divisor):
        counts.shifts += n_outputs
    else:
        counts.mults += n_outputs


def shift_quant_bits(module: Any) -> tuple[int, int, int, bool]:
    """``(weight_bits, act_int_bits, act_frac_bits, found)`` of a shift layer (docs/algorithms.md §1).

    Read from the module's attributes, or from a ``config`` / ``quant_config`` / ``shift_config`` object with those
    attributes; ``found`` is False when the DeepShift defaults (5, 16, 16) had to be assumed."""
    for holder in (module, *(getattr(module, n, None) for n in ("config", "quant_config", "shift_config"))):
        if holder is None:
            continue
        w, i, f = (getattr(holder, n, None) for n in ("weight_bits", "act_int_bits", "act_frac_bits"))
        if isinstance(w, int) and isinstance(i, int) and isinstance(f, int):
            return w, i, f, True
    return 5, 16, 16, False


def conv_output_spatial(module: Any, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Output spatial size of a conv with ``module``'s geometry (used where the output is not observed)."""
    n = len(in_spatial)
    kernel = _to_tuple(module.kernel_size, n)
    stride = _to_tuple(module.stride, n)
    dilation = _to_tuple(module.dilation, n)
    padding = module.padding
    if padding == "valid":
        padding = (0,) * n
    if padding == "same":
        return tuple(in_spatial)
    padding = _to_tuple(padding, n)
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(in_spatial, kernel, stride, padding, dilation)
    )
