"""DeepShift-Q shift operators: power-of-two weights, fixed-point inputs (docs/algorithms.md §1).

A shift layer multiplies nothing: every weight is ``sign · 2^p`` with an integer ``p`` in ``[p_min, 0]`` and every
input is a fixed-point number, so ``x · w`` is the integer ``X_int`` shifted by ``p`` bits (and negated for a
negative weight). This module holds the maths, without ``nn.Module`` state:

* :class:`ShiftQuantConfig`               the quantisation format (validated, frozen)
* :func:`round_weight_to_power_of_two`   ``W_q = sign(W) · 2^round(log2(clamp(|W|, 2^p_min, 2^p_max)))``, STE
* :func:`quantize_input_fixed_point`     ``x_q = clamp(floor(x·2^f)/2^f, -2^(i-1), 2^(i-1) - 2^-f)``, STE
* :func:`quantize_leading_channels`      the same on the first ``n`` channels only, in one copy (hybrid layers)
* :func:`shift_conv2d`, :func:`shift_linear`                  training / float evaluation path
* integer evaluation path (``functional/shift_integer.py``): ``Y = Σ ±(X_int << P)``

Conventions (decided here, relied on by the layers and the tests):

* **Weight rounding** is ``round(log2 |W|)`` in the log domain (DeepShift): ``|W|`` rounds up to ``2^(p+1)`` iff
  ``|W| ≥ 2^(p+½)``. It is computed exactly from ``frexp`` (no ``log2`` round-off, identical for every float
  dtype). Exact zeros stay 0; magnitudes below ``2^p_min`` become ``±2^p_min``, above ``2^p_max = 1`` become ``±1``.
  The clamp is **out of place**: with heterogeneous weight sharing the stored tensor is also the multiplicative
  weight, so it must never be modified.
* **STE** (straight-through estimator): the rounding passes the gradient unchanged; saturation masks it.
  Weights: ``dL/dW = dL/dW_q`` where ``|W| ≤ 2^p_max`` and 0 where ``|W| > 2^p_max`` (saturated). Magnitudes below
  ``2^p_min`` keep their gradient (rounding them to the smallest shift is part of the rounding, and they must be
  able to grow or change sign). Inputs: ``dL/dx = dL/dx_q`` inside ``[-2^(i-1), 2^(i-1) - 2^-f]``, 0 outside.
  The forward value is *exactly* the quantised value. Eager calls implement the STE as autograd Functions
  (``_FixedPointSTE``: ~3 passes over the input forward, and the gradient passed through untouched when no element
  saturates; ``_MaskedSTE`` for weights); inside a ``torch.compile`` trace the plain ``q + (x - x.detach())``
  formulation is emitted. The only visible difference between the two: an input ``-0.0`` quantises to ``-0.0``
  in the Function and to ``+0.0`` in the plain formulation (``-0 + 0 = +0``); the values are equal.
* **Bias** (DeepShift-Q): when ``quantize_input`` is on, the bias is quantised to the same fixed-point format as
  the input (same STE) and added before the output; in the integer path it enters the accumulator as
  ``B_int << -p_min``. With ``quantize_input`` off the bias is added in float.
* **Half precision**: quantisers compute in float32 for float16/bfloat16 tensors (``x · 2^16`` overflows float16)
  and return the input dtype; the convolution then runs in that dtype, on a coarser grid than the configured
  format. In float32 the fixed-point grid is exact (flooring clears low mantissa bits), except the upper clamp
  bound ``2^(i-1) - 2^-f`` which float32 cannot hold for ``i + f > 24`` (it rounds to ``2^(i-1)``). The integer
  path is the reference for deployment.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ShiftQuantConfig",
    "round_weight_to_power_of_two",
    "quantize_input_fixed_point",
    "quantize_leading_channels",
    "weight_to_sign_shift",
    "input_to_fixed_point_int",
    "shift_conv2d",
    "shift_linear",
]

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int], str]

_ROUNDINGS = ("floor", "round")
_MIN_WEIGHT_BITS, _MAX_WEIGHT_BITS = 2, 8
_MAX_ACT_BITS = 53  # the fixed-point grid must be exact in float64 (53-bit significand)
_INV_SQRT2 = 2.0**-0.5  # the float64 just above the true 1/sqrt(2): see _round_log2_magnitude


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ShiftQuantConfig:
    """Quantisation format of a DeepShift-Q shift layer (docs/algorithms.md §1).

    Args:
        weight_bits: 1 sign bit + ``weight_bits - 1`` shift bits, so ``p ∈ [-(2^(weight_bits-1) - 1), 0]``;
            the default 5 gives ``p ∈ [-15, 0]``. Allowed: 2..8.
        act_int_bits: integer bits of the fixed-point input, sign included (``i``); range ``[-2^(i-1), 2^(i-1))``.
        act_frac_bits: fraction bits of the fixed-point input (``f``); resolution ``2^-f``.
        act_rounding: ``'floor'`` (DeepShift) or ``'round'`` (to nearest, ties to even) onto the ``2^-f`` grid.
        quantize_input: quantise inputs (and the bias) to fixed point; off gives a weight-only shift layer.
    """

    weight_bits: int = 5
    act_int_bits: int = 16
    act_frac_bits: int = 16
    act_rounding: str = "floor"
    quantize_input: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.weight_bits) or not _MIN_WEIGHT_BITS <= self.weight_bits <= _MAX_WEIGHT_BITS:
            raise ValueError(
                f"weight_bits={self.weight_bits!r} is invalid: use an int in [{_MIN_WEIGHT_BITS}, {_MAX_WEIGHT_BITS}] "
                "(1 sign bit + shift bits; 5 gives shifts p in [-15, 0])"
            )
        if not _is_int(self.act_int_bits) or self.act_int_bits < 1:
            raise ValueError(
                f"act_int_bits={self.act_int_bits!r} is invalid: use an int >= 1 (integer bits including the sign bit)"
            )
        if not _is_int(self.act_frac_bits) or self.act_frac_bits < 0:
            raise ValueError(f"act_frac_bits={self.act_frac_bits!r} is invalid: use an int >= 0")
        if self.act_int_bits + self.act_frac_bits > _MAX_ACT_BITS:
            raise ValueError(
                f"act_int_bits + act_frac_bits = {self.act_int_bits + self.act_frac_bits} exceeds {_MAX_ACT_BITS}: "
                "the fixed-point grid would not be exact in float64; use fewer bits (default 16 + 16)"
            )
        if self.act_rounding not in _ROUNDINGS:
            raise ValueError(f"act_rounding={self.act_rounding!r} is invalid: use one of {list(_ROUNDINGS)}")
        if not isinstance(self.quantize_input, bool):
            raise ValueError(f"quantize_input={self.quantize_input!r} is invalid: use True or False")

    @property
    def p_min(self) -> int:
        """Smallest weight exponent: ``-(2^(weight_bits-1) - 1)``."""
        return -((1 << (self.weight_bits - 1)) - 1)

    @property
    def p_max(self) -> int:
        """Largest weight exponent (weights are at most ±1)."""
        return 0

    @property
    def act_min(self) -> float:
        """Smallest representable input, ``-2^(i-1)``."""
        return -(2.0 ** (self.act_int_bits - 1))

    @property
    def act_max(self) -> float:
        """Largest representable input, ``2^(i-1) - 2^-f`` (a float64 value; see the module notes on float32)."""
        return 2.0 ** (self.act_int_bits - 1) - 2.0**-self.act_frac_bits

    @property
    def act_int_range(self) -> tuple[int, int]:
        """Range of ``X_int = x_q · 2^f``: ``[-2^(i-1+f), 2^(i-1+f) - 1]``."""
        top = 1 << (self.act_int_bits - 1 + self.act_frac_bits)
        return -top, top - 1


_DEFAULT_CONFIG = ShiftQuantConfig()


def _resolve(config: ShiftQuantConfig | None) -> ShiftQuantConfig:
    if config is None:
        return _DEFAULT_CONFIG
    if not isinstance(config, ShiftQuantConfig):
        raise TypeError(f"config must be a ShiftQuantConfig, got {type(config).__name__}")
    return config


def _compute_dtype(t: Tensor, what: str) -> torch.dtype:
    if not t.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {t.dtype}")
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _round_log2_magnitude(magnitude: Tensor) -> Tensor:
    """``round(log2(m))`` for positive finite ``m``, exactly (int32 result).

    ``m = mant · 2^e`` with ``mant ∈ [0.5, 1)``, so ``log2 m ∈ [e-1, e)`` and it rounds down iff
    ``mant < 2^-½``. The float64 constant ``2^-0.5`` is the double just above the irrational ``1/√2``; no float32
    or float64 value lies between them, so the comparison decides exactly (ties are impossible).
    """
    mant, exp = torch.frexp(magnitude)
    return exp - (mant.to(torch.float64) < _INV_SQRT2).to(exp.dtype)


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _ste(quantised: Tensor, source: Tensor, keep_grad: Tensor) -> Tensor:
    """Value ``quantised`` (exactly), gradient ``d/d source`` = ``keep_grad`` mask (straight-through).

    Plain-op formulation, used inside an outer ``torch.compile`` trace (the compiler fuses it); eager calls use the
    equivalent autograd Functions :class:`_MaskedSTE` / :class:`_FixedPointSTE` (fewer passes over the tensor).
    """
    passthrough = torch.where(keep_grad, source, torch.zeros_like(source))
    return quantised + (passthrough - passthrough.detach())


def _masked_grad(grad: Tensor, keep_grad: Tensor) -> Tensor:
    """``grad`` where ``keep_grad``, exactly 0 elsewhere (also where ``grad`` is inf/NaN: no ``grad * mask``)."""
    return torch.where(keep_grad, grad, grad.new_zeros(()))


class _MaskedSTE(torch.autograd.Function):
    """Straight-through estimator with a fixed value: forward returns ``quantised``, backward ``g`` masked by
    ``keep_grad`` (docs/algorithms.md §1 STE). Same values and gradients as :func:`_ste`, with one backward op."""

    @staticmethod
    def forward(ctx: Any, source: Tensor, quantised: Tensor, keep_grad: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(keep_grad)
        return quantised

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        (keep_grad,) = ctx.saved_tensors
        return _masked_grad(grad, keep_grad), None, None


def round_weight_to_power_of_two(weight: Tensor, config: ShiftQuantConfig | None = None) -> Tensor:
    """DeepShift-Q weight quantiser (docs/algorithms.md §1), straight-through, out of place.

    ``W_q = sign(W) · 2^round(log2(clamp(|W|, 2^p_min, 2^p_max)))``; exact zeros stay 0. Returns a new tensor of
    ``weight``'s dtype; ``weight`` is never modified. Gradient: identity where ``|W| ≤ 2^p_max``, 0 where saturated.
    """
    cfg = _resolve(config)
    dtype = _compute_dtype(weight, "weight")
    w = weight.to(dtype)
    with torch.no_grad():
        magnitude = w.abs().clamp(2.0**cfg.p_min, 2.0**cfg.p_max)  # out of place
        power = torch.ldexp(torch.ones_like(magnitude), _round_log2_magnitude(magnitude))
        quantised = torch.where(w < 0, -power, power)
        quantised = torch.where(w == 0, torch.zeros_like(power), quantised)
        quantised = torch.where(torch.isnan(w), w, quantised)
        keep_grad = w.abs() <= 2.0**cfg.p_max
    out = _ste(quantised, w, keep_grad) if _is_compiling() else _MaskedSTE.apply(w, quantised, keep_grad)
    return out.to(weight.dtype)


def _fixed_point_scaled(x: Tensor, cfg: ShiftQuantConfig) -> Tensor:
    """``floor`` / ``round`` of ``x · 2^f`` (no clamp), in ``x``'s dtype; exact (power-of-two scaling)."""
    scaled = x * (2.0**cfg.act_frac_bits)
    return torch.floor(scaled) if cfg.act_rounding == "floor" else torch.round(scaled)


def _scaled_to_grid_(scaled: Tensor, cfg: ShiftQuantConfig) -> Tensor:
    """In place: ``scaled ← floor(scaled) · 2^-f`` (``round`` for ``act_rounding='round'``), for ``scaled = x · 2^f``.
    Both scalings are exact powers of two (``· 2^-f`` equals ``/ 2^f`` bit for bit) while ``|x · 2^f|`` is finite,
    which the callers guarantee (``|x| ≤ 2^(i-1)``, ``i + f ≤ 53``)."""
    scaled.floor_() if cfg.act_rounding == "floor" else scaled.round_()
    return scaled.mul_(2.0**-cfg.act_frac_bits)


def _all_in_range(x: Tensor, lo: float, hi: float) -> bool:
    """``((x >= lo) & (x <= hi)).all()`` from two read-only reductions (``amin`` / ``amax`` propagate NaN, so a NaN
    makes it False; on CPU they are about 3x faster than ``aminmax``). The bounds are compared in ``x``'s dtype."""
    if x.numel() == 0:
        return True
    return bool((torch.amin(x) >= lo) & (torch.amax(x) <= hi))


class _FixedPointSTE(torch.autograd.Function):
    """Fixed-point quantiser with its straight-through gradient, in as few passes over ``x`` as possible.

    Forward, values identical to ``clamp(floor(x·2^f)/2^f, lo, hi)``:

    * every element in ``[lo, hi]`` (the usual case; read-only ``amin`` / ``amax`` decide): no clamp is needed
      (``floor`` only moves down, ``lo`` is on the grid) and no mask is kept: the gradient is ``g`` itself;
    * otherwise: ``c = clamp(x, lo, hi)``, the mask ``c == x`` (exactly ``lo ≤ x ≤ hi``, False for NaN), then
      ``c`` is moved onto the grid in place. Clamping before flooring gives the same values: ``lo`` and ``hi`` are
      grid points (in float32 ``hi`` may round up to ``2^(i-1)``, also a grid point).

    Backward: ``g`` where ``lo ≤ x ≤ hi``, 0 elsewhere (docs/algorithms.md §1 STE), exactly as :func:`_ste`.
    The bounds are compared in ``x``'s dtype, like the plain formulation.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, cfg: ShiftQuantConfig) -> Tensor:  # noqa: D102
        lo, hi = cfg.act_min, cfg.act_max
        if _all_in_range(x, lo, hi):
            ctx.keep_all = True
            return _scaled_to_grid_(torch.mul(x, 2.0**cfg.act_frac_bits), cfg)
        ctx.keep_all = False
        clamped = torch.clamp(x, lo, hi)
        ctx.save_for_backward(clamped == x)
        return _scaled_to_grid_(clamped.mul_(2.0**cfg.act_frac_bits), cfg)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        if ctx.keep_all:
            return grad, None
        (keep_grad,) = ctx.saved_tensors
        return _masked_grad(grad, keep_grad), None


def quantize_input_fixed_point(x: Tensor, config: ShiftQuantConfig | None = None) -> Tensor:
    """Fixed-point input quantiser (docs/algorithms.md §1), straight-through.

    ``x_q = clamp(floor(x·2^f)/2^f, -2^(i-1), 2^(i-1) - 2^-f)`` (``round`` instead of ``floor`` when
    ``act_rounding='round'``, ties to even). Gradient: identity inside the representable range, 0 outside.
    Ignores ``config.quantize_input`` (callers decide whether to quantise). Eager calls run
    :class:`_FixedPointSTE` (about 3 passes over ``x`` forward, none backward); inside a ``torch.compile`` trace
    the plain formulation is emitted for the compiler to fuse.
    """
    cfg = _resolve(config)
    dtype = _compute_dtype(x, "input")
    xc = x.to(dtype)
    lo, hi = cfg.act_min, cfg.act_max
    if _is_compiling():
        with torch.no_grad():
            quantised = (_fixed_point_scaled(xc, cfg) / (2.0**cfg.act_frac_bits)).clamp(lo, hi)
        out = _ste(quantised, xc, (xc >= lo) & (xc <= hi))
    else:
        out = _FixedPointSTE.apply(xc, cfg)
    return out.to(x.dtype)


class _LeadingFixedPointSTE(torch.autograd.Function):
    """``cat([Q(x[:, :n]), x[:, n:]], 1)`` in one copy of ``x``: the leading ``n`` channels of the copy are moved
    onto the fixed-point grid in place (as :class:`_FixedPointSTE`). Backward: ``g`` itself when no leading
    element saturates (no slice or concatenation gradients: nothing is allocated), else ``g`` with its leading
    channels masked where ``x`` was outside ``[lo, hi]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, n: int, cfg: ShiftQuantConfig) -> Tensor:  # noqa: D102
        lo, hi = cfg.act_min, cfg.act_max
        out = x.clone()
        head = out[:, :n]
        ctx.n, ctx.keep_all = n, _all_in_range(head, lo, hi)
        if not ctx.keep_all:
            ctx.save_for_backward((head >= lo) & (head <= hi))
            head.clamp_(lo, hi)
        _scaled_to_grid_(head.mul_(2.0**cfg.act_frac_bits), cfg)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        if ctx.keep_all:
            return grad, None, None
        (keep_grad,) = ctx.saved_tensors
        out = grad.clone()
        out[:, : ctx.n] = _masked_grad(grad[:, : ctx.n], keep_grad)
        return out, None, None


def quantize_leading_channels(x: Tensor, n: int, config: ShiftQuantConfig | None = None) -> Tensor:
    """``cat([quantize_input_fixed_point(x[:, :n]), x[:, n:]], 1)``, same values and gradients, without the
    slice and concatenation (one copy of ``x``, no backward pass over it when nothing saturates): the input of a
    hybrid shift layer, whose target channels are fixed point and whose augmented channels stay float (eq. 4).
    Half-precision inputs and ``torch.compile`` traces use the plain formulation."""
    if not 0 <= n <= x.shape[1]:
        raise ValueError(f"quantize_leading_channels: n must be in [0, {x.shape[1]}] (the channel count), got {n}")
    cfg = _resolve(config)
    if n == x.shape[1]:
        return quantize_input_fixed_point(x, cfg)
    if n == 0:
        return x
    if _is_compiling() or _compute_dtype(x, "input") != x.dtype:
        return torch.cat([quantize_input_fixed_point(x[:, :n], cfg), x[:, n:]], 1)
    return _LeadingFixedPointSTE.apply(x, n, cfg)


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if _is_int(value):
        pair = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    elif isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        pair = (int(value[0]), int(value[0]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _explicit_padding(
    padding: Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` zero padding, with PyTorch's meaning of ``'same'`` / ``'valid'``."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' needs stride 1 (as in torch.nn.functional.conv2d)")
            sides = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                sides += [total // 2, total - total // 2]
            return sides[0], sides[1], sides[2], sides[3]
        raise ValueError(f"padding={padding!r} is invalid: use an int, a pair of ints, 'same' or 'valid'")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return ph, ph, pw, pw


def _quantize_bias(bias: Tensor | None, cfg: ShiftQuantConfig) -> Tensor | None:
    if bias is None or not cfg.quantize_input:
        return bias
    return quantize_input_fixed_point(bias, cfg)


def shift_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    config: ShiftQuantConfig | None = None,
) -> Tensor:
    """Shift convolution, float path (training and float evaluation; docs/algorithms.md §1).

    ``conv2d(x_q, W_q) + b_q`` with :func:`quantize_input_fixed_point` (if ``config.quantize_input``) and
    :func:`round_weight_to_power_of_two`, both straight-through. Zero padding only (pad other modes outside).
    """
    cfg = _resolve(config)
    xq = quantize_input_fixed_point(x, cfg) if cfg.quantize_input else x
    wq = round_weight_to_power_of_two(weight, cfg)
    return F.conv2d(xq, wq, _quantize_bias(bias, cfg), stride, padding, dilation, groups)


def shift_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, config: ShiftQuantConfig | None = None
) -> Tensor:
    """Shift fully connected layer, float path: ``linear(x_q, W_q, b_q)`` (see :func:`shift_conv2d`)."""
    cfg = _resolve(config)
    xq = quantize_input_fixed_point(x, cfg) if cfg.quantize_input else x
    wq = round_weight_to_power_of_two(weight, cfg)
    return F.linear(xq, wq, _quantize_bias(bias, cfg))


# ----------------------------------------------------------------------------------------------------------------
# Integer evaluation path
# ----------------------------------------------------------------------------------------------------------------


def weight_to_sign_shift(weight: Tensor, config: ShiftQuantConfig | None = None) -> tuple[Tensor, Tensor]:
    """Integer form of :func:`round_weight_to_power_of_two`: ``(sign, P)`` with ``W_q = sign · 2^(P + p_min)``.

    ``sign`` is int8 in ``{-1, 0, 1}`` (0 for exact zeros), ``P = p - p_min ∈ [0, p_max - p_min]`` is int64.
    """
    cfg = _resolve(config)
    if torch.isnan(weight).any():
        raise ValueError("weight has NaN entries; a shift layer cannot represent them")
    with torch.no_grad():
        quantised = round_weight_to_power_of_two(weight.detach(), cfg)
        sign = torch.sign(quantised).to(torch.int8)
        magnitude = torch.where(quantised == 0, torch.ones_like(quantised), quantised.abs())
        _, exp = torch.frexp(magnitude)  # magnitude = 0.5 · 2^exp exactly
        shift = (exp.to(torch.int64) - 1 - cfg.p_min).masked_fill(quantised == 0, 0)
    return sign, shift


def input_to_fixed_point_int(x: Tensor, config: ShiftQuantConfig | None = None) -> Tensor:
    """``X_int = x_q · 2^f`` as int64, clamped to :attr:`ShiftQuantConfig.act_int_range` exactly."""
    cfg = _resolve(config)
    _compute_dtype(x, "input")
    if torch.isnan(x).any():
        raise ValueError("input has NaN entries; the integer shift path cannot represent them")
    lo, hi = cfg.act_int_range
    with torch.no_grad():
        scaled = _fixed_point_scaled(x.detach().to(torch.float64), cfg)  # exact for every float dtype
        # clamp to powers of two (exact in float64) before the int cast, then exactly in int64
        scaled = scaled.clamp(float(lo), float(-lo))
        return scaled.to(torch.int64).clamp(lo, hi)
