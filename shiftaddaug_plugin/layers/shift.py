"""DeepShift-Q shift layers: ``ShiftConv2d`` and ``ShiftLinear`` (docs/algorithms.md §1).

Thin ``nn.Conv2d`` / ``nn.Linear`` subclasses: the stored ``weight`` / ``bias`` stay ordinary float parameters
(Gaussian-initialised like the parent class, shareable with multiplicative layers), and every forward reads them
through the power-of-two quantiser of :mod:`shiftaddaug_plugin.functional.shift` (out of place, STE). Inputs are
quantised to fixed point. ``integer_forward`` evaluates the same layer with integer shifts and additions only.
"""
from __future__ import annotations

from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.shift import (
    ShiftQuantConfig,
    round_weight_to_power_of_two,
    shift_conv2d,
    shift_linear,
)
from ..functional.shift_fast_integer import shift_conv2d_integer_fast, shift_linear_integer_fast
from ..functional.shift_integer import shift_conv2d_integer, shift_linear_integer

__all__ = ["ShiftConv2d", "ShiftLinear", "shift_quant_config", "shift_quant_repr"]

def shift_quant_config(
    weight_bits: int = 5,
    act_int_bits: int = 16,
    act_frac_bits: int = 16,
    act_rounding: str = "floor",
    quantize_input: bool = True,
) -> ShiftQuantConfig:
    """Build (and validate) the layer's :class:`ShiftQuantConfig` from the layers' keyword arguments."""
    return ShiftQuantConfig(
        weight_bits=weight_bits,
        act_int_bits=act_int_bits,
        act_frac_bits=act_frac_bits,
        act_rounding=act_rounding,
        quantize_input=quantize_input,
    )


def shift_quant_repr(cfg: ShiftQuantConfig) -> str:
    """``extra_repr`` fragment showing the quantisation settings."""
    text = f"weight_bits={cfg.weight_bits} (p in [{cfg.p_min}, {cfg.p_max}])"
    if cfg.quantize_input:
        text += f", act_int_bits={cfg.act_int_bits}, act_frac_bits={cfg.act_frac_bits}"
        text += f", act_rounding={cfg.act_rounding!r}"
    else:
        text += ", quantize_input=False"
    return text


def _check_plain(module: nn.Module, expected: type, caller: str) -> None:
    if type(module) is not expected:
        raise TypeError(
            f"{caller}.from_float expects a plain {expected.__module__}.{expected.__name__}, got "
            f"{type(module).__module__}.{type(module).__qualname__}; subclasses (e.g. timm Conv2dSame/StdConv2d, "
            "mmcv Conv2dAdaptivePadding) compute differently and need their own conversion rule"
        )


class ShiftConv2d(nn.Conv2d):
    """2-D convolution with power-of-two weights and fixed-point inputs (DeepShift-Q, docs/algorithms.md §1).

    Same constructor as ``nn.Conv2d`` plus keyword-only quantisation settings (see :class:`ShiftQuantConfig`):
    ``weight_bits`` (5 → shifts ``p ∈ [-15, 0]``), ``act_int_bits`` / ``act_frac_bits`` (16 / 16),
    ``act_rounding`` (``'floor'`` | ``'round'``), ``quantize_input`` (True). Any stride / padding / dilation /
    groups (depthwise included) and every ``padding_mode`` (non-zero modes pad before quantising, which commutes:
    they copy values).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, tuple[int, int]],
        stride: Union[int, tuple[int, int]] = 1,
        padding: Union[str, int, tuple[int, int]] = 0,
        dilation: Union[int, tuple[int, int]] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        weight_bits: int = 5,
        act_int_bits: int = 16,
        act_frac_bits: int = 16,
        act_rounding: str = "floor",
        quantize_input: bool = True,
    ) -> None:
        quant_config = shift_quant_config(weight_bits, act_int_bits, act_frac_bits, act_rounding, quantize_input)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device=device, dtype=dtype,
        )
        self.quant_config = quant_config

    # ------------------------------------------------------------------------------------------------ helpers
    def _padded(self, x: Tensor) -> tuple[Tensor, Any]:
        """Apply a non-zero ``padding_mode`` outside the conv (as ``nn.Conv2d`` does); return ``(x, padding)``."""
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return x, self.padding

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """Shift convolution with the given weight/bias (overrides ``nn.Conv2d``'s multiplicative one, so callers of
        this hook, e.g. mmcv ``ConvModule(efficient_conv_bn_eval=True)`` which passes a BN-folded weight, still get
        power-of-two weights and fixed-point inputs, never a silent multiplicative conv)."""
        x, padding = self._padded(input)
        return shift_conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups, self.quant_config)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - float (training) path
        return self._conv_forward(x, self.weight, self.bias)

    def integer_forward(self, x: Tensor, *, reference: bool = False) -> Tensor:
        """Evaluate the integer shift path; no autograd. ``reference=True``: int64 shifts and additions only
        (:func:`shift_conv2d_integer`); default: the fast executor with the bit-identical result
        (:func:`~shiftaddaug_plugin.functional.shift_fast_integer.shift_conv2d_integer_fast`)."""
        fn = shift_conv2d_integer if reference else shift_conv2d_integer_fast
        with torch.no_grad():
            x, padding = self._padded(x)
            return fn(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups, self.quant_config)

    def power_of_two_weight(self) -> Tensor:
        """The quantised weight ``sign · 2^p`` the layer computes with (detached, for export and inspection)."""
        with torch.no_grad():
            return round_weight_to_power_of_two(self.weight, self.quant_config)

    @classmethod
    def from_float(cls, module: nn.Conv2d, **quant_kwargs: Any) -> "ShiftConv2d":
        """A ``ShiftConv2d`` with the geometry of the plain ``nn.Conv2d`` ``module`` and copies of its weight and
        bias (same device / dtype / train state); ``quant_kwargs`` are the keyword-only quantisation settings."""
        _check_plain(module, nn.Conv2d, cls.__name__)
        new = cls(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode,
            device=module.weight.device, dtype=module.weight.dtype, **quant_kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(module.weight)
            if module.bias is not None:
                new.bias.copy_(module.bias)
        return new.train(module.training)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, {shift_quant_repr(self.quant_config)}"


class ShiftLinear(nn.Linear):
    """Fully connected layer with power-of-two weights and fixed-point inputs (DeepShift-Q, docs/algorithms.md §1).

    Same constructor as ``nn.Linear`` plus the keyword-only quantisation settings of :class:`ShiftConv2d`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        weight_bits: int = 5,
        act_int_bits: int = 16,
        act_frac_bits: int = 16,
        act_rounding: str = "floor",
        quantize_input: bool = True,
    ) -> None:
        quant_config = shift_quant_config(weight_bits, act_int_bits, act_frac_bits, act_rounding, quantize_input)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.quant_config = quant_config

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - float (training) path
        return shift_linear(x, self.weight, self.bias, self.quant_config)

    def integer_forward(self, x: Tensor, *, reference: bool = False) -> Tensor:
        """Evaluate the integer shift path; no autograd (``reference=True``: :func:`shift_linear_integer`, int64
        only; default: the fast executor, bit-identical)."""
        fn = shift_linear_integer if reference else shift_linear_integer_fast
        with torch.no_grad():
            return fn(x, self.weight, self.bias, self.quant_config)

    def power_of_two_weight(self) -> Tensor:
        """The quantised weight ``sign · 2^p`` the layer computes with (detached, for export and inspection)."""
        with torch.no_grad():
            return round_weight_to_power_of_two(self.weight, self.quant_config)

    @classmethod
    def from_float(cls, module: nn.Linear, **quant_kwargs: Any) -> "ShiftLinear":
        """A ``ShiftLinear`` with copies of the plain ``nn.Linear`` ``module``'s weight and bias."""
        _check_plain(module, nn.Linear, cls.__name__)
        new = cls(
            module.in_features, module.out_features, module.bias is not None,
            device=module.weight.device, dtype=module.weight.dtype, **quant_kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(module.weight)
            if module.bias is not None:
                new.bias.copy_(module.bias)
        return new.train(module.training)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, {shift_quant_repr(self.quant_config)}"
