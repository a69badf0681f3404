"""The integer evaluation path of shift layers (docs/algorithms.md §1): ``Y = 2^(p_min - f) · Σ ±(X_int << P)``.

:func:`integer_conv_operands` checks and quantises once; :func:`accumulate_int64` is the reference accumulator
(int64 shifts, negations and additions only); :func:`shift_conv2d_integer` / :func:`shift_linear_integer` are the
reference executors, and ``shift_fast_integer`` computes the same accumulator faster.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .shift import (
    IntPair,
    Padding,
    ShiftQuantConfig,
    _explicit_padding,
    _is_int,
    _pair,
    _resolve,
    input_to_fixed_point_int,
    weight_to_sign_shift,
)

__all__ = ["IntegerConvOperands", "accumulate_int64", "accumulator_bound", "integer_conv_operands",
           "integer_conv_output", "linear_via_conv", "shift_conv2d_integer", "shift_linear_integer"]

#: the int64 accumulator's temporaries hold at most this many elements (output channels are chunked)
_INT_CHUNK_ELEMENTS = 1 << 22


def accumulator_bound(x_int: Tensor, shift: Tensor, fan_in: int, bias_int: Tensor | None, bias_shift: int) -> int:
    """An upper bound of ``|Σ ±(X_int << P) + (B_int << bias_shift)|`` and of every partial sum (from the data)."""
    max_x = int(x_int.abs().max()) if x_int.numel() else 0
    max_shift = int(shift.max()) if shift.numel() else 0
    bound = max_x * fan_in << max_shift
    if bias_int is not None and bias_int.numel():
        bound += int(bias_int.abs().max()) << bias_shift
    return bound


def _check_no_overflow(x_int: Tensor, shift: Tensor, fan_in: int, bias_int: Tensor | None, bias_shift: int) -> None:
    """Raise if ``Σ ±(X_int << P)`` could leave int64 (bound from the actual data)."""
    bound = accumulator_bound(x_int, shift, fan_in, bias_int, bias_shift)
    if bound >= 1 << 63:
        raise ValueError(
            f"integer shift path would overflow int64 (bound 2^{bound.bit_length()}, fan-in {fan_in}); "
            "use fewer act_int_bits/act_frac_bits or weight_bits, or smaller inputs"
        )


@dataclasses.dataclass(frozen=True)
class IntegerConvOperands:
    """The validated, quantised operands of one integer shift convolution (:func:`integer_conv_operands`)."""

    x_int: Tensor  #: fixed-point input ``X_int`` (int64), zero-padded
    sign: Tensor  #: weight signs in {-1, 0, 1} (int8), ``(O, C/groups, kh, kw)``
    shift: Tensor  #: ``P = p - p_min >= 0`` (int64), same shape
    bias_int: Tensor | None  #: bias on the input's fixed point (int64)
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]
    config: ShiftQuantConfig
    out_dtype: torch.dtype  #: the input's dtype, the dtype of the result


def integer_conv_operands(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    config: ShiftQuantConfig | None = None,
) -> IntegerConvOperands:
    """Check the arguments of :func:`shift_conv2d_integer` (``ValueError`` naming the problem), quantise input,
    weight and bias, and check that the int64 accumulator cannot overflow."""
    cfg = _resolve(config)
    if not cfg.quantize_input:
        raise ValueError(
            "the integer shift path needs fixed-point inputs: use a config with quantize_input=True "
            "(the float path shift_conv2d serves quantize_input=False)"
        )
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected x (N, C, H, W) and weight (O, C/groups, kh, kw), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c = x.shape[1]
    o, cg, kh, kw = weight.shape
    if c != cg * groups or o % groups != 0:
        raise ValueError(
            f"channel mismatch: input has {c} channels, weight {tuple(weight.shape)} with groups={groups} expects "
            f"{cg * groups} input channels and out channels divisible by groups"
        )
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(bias.shape)}")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got stride={stride!r}, dilation={dilation!r}")
    top, bottom, left, right = _explicit_padding(padding, (kh, kw), (sh, sw), (dh, dw))

    x_int = F.pad(input_to_fixed_point_int(x, cfg), (left, right, top, bottom))
    sign, shift = weight_to_sign_shift(weight, cfg)
    bias_int = input_to_fixed_point_int(bias, cfg) if bias is not None else None
    _check_no_overflow(x_int, shift, cg * kh * kw, bias_int, -cfg.p_min)

    hp, wp = x_int.shape[-2:]
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input {tuple(x.shape)} is smaller than the (dilated) kernel {(kh, kw)} after padding")
    return IntegerConvOperands(x_int, sign, shift, bias_int, (sh, sw), (dh, dw), groups, (ho, wo), cfg, x.dtype)


def accumulate_int64(ops: IntegerConvOperands) -> Tensor:
    """``Σ_{c,tap} ±(X_int << P) + (B_int << -p_min)`` in int64, ``(N, O, Ho, Wo)``: shifts, negations and additions
    only, one kernel tap at a time (strided views), output channels chunked to bound the temporaries."""
    n, _, hp, wp = ops.x_int.shape
    o, cg, kh, kw = ops.sign.shape
    groups, (sh, sw), (dh, dw), (ho, wo) = ops.groups, ops.stride, ops.dilation, ops.out_hw
    og = o // groups
    x_groups = ops.x_int.view(n, groups, cg, hp, wp)
    sign = ops.sign.view(groups, og, cg, kh, kw)
    shift = ops.shift.view(groups, og, cg, kh, kw)
    acc = torch.zeros(n, groups, og, ho, wo, dtype=torch.int64, device=ops.x_int.device)
    per_out = n * groups * cg * ho * wo
    chunk = max(1, min(og, _INT_CHUNK_ELEMENTS // max(per_out, 1)))
    for a in range(kh):
        rows = slice(a * dh, a * dh + sh * (ho - 1) + 1, sh)
        for b in range(kw):
            cols = slice(b * dw, b * dw + sw * (wo - 1) + 1, sw)
            tap = x_groups[:, :, :, rows, cols].unsqueeze(2)  # (n, G, 1, cg, ho, wo), a strided view
            for o0 in range(0, og, chunk):
                s = sign[:, o0 : o0 + chunk, :, a, b][None, :, :, :, None, None]
                p = shift[:, o0 : o0 + chunk, :, a, b][None, :, :, :, None, None]
                shifted = torch.bitwise_left_shift(tap, p)  # (n, G, oc, cg, ho, wo)
                signed = torch.where(s < 0, -shifted, shifted)
                signed = torch.where(s == 0, torch.zeros_like(signed), signed)
                acc[:, :, o0 : o0 + chunk] += signed.sum(dim=3)
    acc = acc.view(n, o, ho, wo)
    if ops.bias_int is not None:
        acc = acc + torch.bitwise_left_shift(ops.bias_int, -ops.config.p_min).view(1, o, 1, 1)
    return acc


def integer_conv_output(acc: Tensor, ops: IntegerConvOperands) -> Tensor:
    """The binary-point move by the power of two ``2^(p_min - f)`` (exact in float64 below 2^53), then one
    rounding to the input's dtype."""
    return (acc.to(torch.float64) * 2.0 ** (ops.config.p_min - ops.config.act_frac_bits)).to(ops.out_dtype)


def shift_conv2d_integer(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    config: ShiftQuantConfig | None = None,
) -> Tensor:
    """Shift convolution evaluated in integers (docs/algorithms.md §1 eval path), multiplication free.

    ``X_int = x_q · 2^f`` (int64) and ``W_q = sign · 2^(P + p_min)``, so
    ``Y = 2^(p_min - f) · (Σ_{c,tap} ±(X_int << P) + (B_int << -p_min))``: the accumulator uses only
    ``torch.bitwise_left_shift``, negation (``torch.where`` on the sign) and additions; the single final scaling by
    the power of two ``2^(p_min - f)`` moves the binary point. The bias is quantised to the input's fixed point.

    Result in ``x``'s dtype: the exact accumulator, rounded once. It equals a float64 evaluation of
    ``conv2d(x_q, W_q) + b_q`` bit for bit whenever that evaluation is exact (``|acc| < 2^53``). Zero padding only.
    Patches are strided views of the padded int64 input, one kernel tap at a time, with output channels chunked
    so a temporary holds at most ~4M int64 elements (slow, memory-bounded; for checking and deployment studies).
    """
    ops = integer_conv_operands(x, weight, bias, stride, padding, dilation, groups, config)
    return integer_conv_output(accumulate_int64(ops), ops)


def linear_via_conv(conv: Any, x: Tensor, weight: Tensor, bias: Tensor | None, config: ShiftQuantConfig | None
                    ) -> Tensor:
    """A fully connected layer ``(..., in) -> (..., out)`` as the 1x1 integer convolution ``conv``."""
    if weight.dim() != 2:
        raise ValueError(f"expected weight (out, in), got {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input's last dimension {tuple(x.shape)[-1:]} does not match weight in_features {weight.shape[1]}"
        )
    lead = x.shape[:-1]
    flat = x.reshape(-1, weight.shape[1], 1, 1)
    out = conv(flat, weight[:, :, None, None], bias, config=config)
    return out.reshape(*lead, weight.shape[0])


def shift_linear_integer(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, config: ShiftQuantConfig | None = None
) -> Tensor:
    """Shift fully connected layer evaluated in integers (see :func:`shift_conv2d_integer`); ``x`` is ``(..., in)``."""
    return linear_via_conv(shift_conv2d_integer, x, weight, bias, config)
