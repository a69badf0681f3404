"""Fast executor of the integer shift path: the same integer accumulator, computed by a float64 convolution.

The integer path (:func:`.shift_integer.shift_conv2d_integer`, docs/algorithms.md §1) computes

    ``acc = Σ_{c, tap} sign · (X_int << P)  +  (B_int << -p_min)``,    ``Y = 2^(p_min - f) · acc``

with ``X_int`` the fixed-point input (int64), ``P ∈ [0, p_max - p_min]`` and ``sign ∈ {-1, 0, 1}``. Every term is an
integer and ``X_int << P`` is ``X_int · 2^P``: a float64 operand holds it exactly while ``|X_int| · 2^P < 2^53``, and
a float64 sum of integers is exact, in any order, while every partial sum stays below ``2^53``. So when the bound
``max|X_int| · fan_in · 2^max(P) + max|B_int| · 2^-p_min < 2^53`` holds (checked on the actual data, per call), one
float64 ``conv2d`` of ``X_int`` with the weights ``sign · 2^P`` yields ``acc`` bit for bit, using the CPU's
vectorised float64 GEMM instead of per-tap int64 shifts. Otherwise the call falls back to the int64 reference.
The output is then rounded once, as in the reference, and equals it bit for bit.

This executes the integer arithmetic on floating-point units (the products are exponent shifts of integers, not
general multiplications); a deployment target with integer shift-accumulate units runs the reference's maths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .shift import IntPair, Padding, ShiftQuantConfig
from .shift_integer import (
    accumulate_int64,
    accumulator_bound,
    integer_conv_operands,
    integer_conv_output,
    linear_via_conv,
)

__all__ = ["shift_conv2d_integer_fast", "shift_linear_integer_fast", "EXACT_FLOAT64_LIMIT"]

#: float64 represents every integer of magnitude below 2^53 exactly
EXACT_FLOAT64_LIMIT = 1 << 53


def shift_conv2d_integer_fast(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    config: ShiftQuantConfig | None = None,
) -> Tensor:
    """:func:`shift_conv2d_integer`'s result, bit for bit, via one float64 convolution when that is exact (see the
    module docstring); the int64 accumulation otherwise. Same arguments and errors."""
    ops = integer_conv_operands(x, weight, bias, stride, padding, dilation, groups, config)
    o, cg, kh, kw = ops.sign.shape
    if accumulator_bound(ops.x_int, ops.shift, cg * kh * kw, ops.bias_int, -ops.config.p_min) >= EXACT_FLOAT64_LIMIT:
        return integer_conv_output(accumulate_int64(ops), ops)
    w64 = torch.ldexp(ops.sign.to(torch.float64), ops.shift)
    b64 = None if ops.bias_int is None else torch.ldexp(ops.bias_int.to(torch.float64),
                                                        torch.full_like(ops.bias_int, -ops.config.p_min))
    acc = F.conv2d(ops.x_int.to(torch.float64), w64, b64, ops.stride, 0, ops.dilation, ops.groups)
    return integer_conv_output(acc, ops)


def shift_linear_integer_fast(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, config: ShiftQuantConfig | None = None
) -> Tensor:
    """:func:`shift_linear_integer`'s result, bit for bit (see :func:`shift_conv2d_integer_fast`)."""
    return linear_via_conv(shift_conv2d_integer_fast, x, weight, bias, config)
