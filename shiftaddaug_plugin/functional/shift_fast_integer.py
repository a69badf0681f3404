"""Fast executor of the integer shift path: the same integer accumulator, computed by a float64 convolution.

The integer path (:func:`~shiftaddaug_plugin.functional.shift.shift_conv2d_integer`, docs/algorithms.md §1) computes

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

from .shift import (
    IntPair,
    Padding,
    ShiftQuantConfig,
    _explicit_padding,
    _pair,
    _resolve,
    accumulator_bound,
    input_to_fixed_point_int,
    shift_conv2d_integer,
    shift_linear_integer,
    weight_to_sign_shift,
)

__all__ = ["shift_conv2d_integer_fast", "shift_linear_integer_fast", "EXACT_FLOAT64_LIMIT"]

#: float64 represents every integer of magnitude below 2^53 exactly
EXACT_FLOAT64_LIMIT = 1 << 53


def _exact_in_float64(x_int: Tensor, shift: Tensor, fan_in: int, bias_int: Tensor | None, bias_shift: int) -> bool:
    return accumulator_bound(x_int, shift, fan_in, bias_int, bias_shift) < EXACT_FLOAT64_LIMIT


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
    module docstring); the int64 reference otherwise. Same arguments and errors."""
    cfg = _resolve(config)
    if not cfg.quantize_input or x.dim() != 4 or weight.dim() != 4:  # the reference raises the right error
        return shift_conv2d_integer(x, weight, bias, stride, padding, dilation, groups, config)
    o, cg, kh, kw = weight.shape
    if not isinstance(groups, int) or groups < 1 or x.shape[1] != cg * groups or o % groups != 0:
        return shift_conv2d_integer(x, weight, bias, stride, padding, dilation, groups, config)
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    top, bottom, left, right = _explicit_padding(padding, (kh, kw), (sh, sw), (dh, dw))
    x_int = F.pad(input_to_fixed_point_int(x, cfg), (left, right, top, bottom))
    sign, shift = weight_to_sign_shift(weight, cfg)
    bias_int = input_to_fixed_point_int(bias, cfg) if bias is not None else None
    if not _exact_in_float64(x_int, shift, cg * kh * kw, bias_int, -cfg.p_min):
        return shift_conv2d_integer(x, weight, bias, stride, padding, dilation, groups, config)
    w64 = sign.to(torch.float64) * torch.ldexp(torch.ones_like(shift, dtype=torch.float64), shift)
    b64 = None if bias_int is None else torch.ldexp(bias_int.to(torch.float64),
                                                    torch.full_like(bias_int, -cfg.p_min))
    acc = F.conv2d(x_int.to(torch.float64), w64, b64, (sh, sw), 0, (dh, dw), groups)
    return (acc * 2.0 ** (cfg.p_min - cfg.act_frac_bits)).to(x.dtype)


def shift_linear_integer_fast(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, config: ShiftQuantConfig | None = None
) -> Tensor:
    """:func:`shift_linear_integer`'s result, bit for bit (see :func:`shift_conv2d_integer_fast`)."""
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        return shift_linear_integer(x, weight, bias, config)  # raises the reference's error
    lead = x.shape[:-1]
    flat = x.reshape(-1, weight.shape[1], 1, 1)
    out = shift_conv2d_integer_fast(flat, weight[:, :, None, None], bias, config=config)
    return out.reshape(*lead, weight.shape[0])
