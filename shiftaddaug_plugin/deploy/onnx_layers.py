"""Standard-op twins of the multiplication-free layers, for ONNX export (docs/deploy.md).

Each twin computes exactly what its layer's float path computes (:mod:`shiftaddaug_plugin.functional`), written in
operations every ONNX runtime has:

* shift conv / linear (DeepShift-Q, paper eq. 1-2): ``x_q = clip(floor(x * 2^f) * 2^-f, lo, hi)`` (``Round`` for
  ``act_rounding='round'``; both scalings are powers of two, i.e. shifts), then ``Conv`` / ``Gemm`` with the
  power-of-two weights ``sign * 2^p`` stored as constants and the fixed-point bias;
* adder conv (AdderNet, paper eq. 3): ``Y = -sum_{c, taps} |X_patch - W|``: zero padding, patch extraction
  (``unfold``), ``Sub``, ``Abs``, ``ReduceSum``, ``Neg`` (+ bias);
* shift-add: the shift twin then the adder twin.

The twins hold detached constants: they are for inference only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.shift import (
    ShiftQuantConfig,
    _fixed_point_scaled,
    quantize_input_fixed_point,
    round_weight_to_power_of_two,
)
from ..layers.adder import AdderConv2d
from ..layers.shift import ShiftConv2d, ShiftLinear
from ..layers.shiftadd import ShiftAddConv2d

__all__ = ["OnnxShiftConv2d", "OnnxShiftLinear", "OnnxAdderConv2d", "onnx_twin", "fixed_point"]


def fixed_point(x: Tensor, cfg: ShiftQuantConfig) -> Tensor:
    """The fixed-point input quantiser in exportable ops (equal to ``quantize_input_fixed_point`` in value)."""
    return torch.clamp(_fixed_point_scaled(x, cfg) * (2.0 ** -cfg.act_frac_bits), cfg.act_min, cfg.act_max)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@torch.no_grad()
def _shift_constants(layer: ShiftConv2d | ShiftLinear | ShiftAddConv2d) -> tuple[Tensor, Tensor | None]:
    """The power-of-two weight ``sign * 2^p`` and the fixed-point bias the layer's float path computes with."""
    cfg = layer.quant_config
    weight = round_weight_to_power_of_two(layer.weight, cfg).detach().clone()
    bias: Tensor | None = layer.bias
    if bias is not None and cfg.quantize_input:
        bias = quantize_input_fixed_point(bias, cfg)
    return weight, None if bias is None else bias.detach().clone()


class OnnxShiftConv2d(nn.Module):
    """``Conv`` with power-of-two weights behind the fixed-point input quantisation (a :class:`ShiftConv2d`)."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: ShiftConv2d | ShiftAddConv2d) -> None:
        super().__init__()
        cfg = layer.quant_config
        if isinstance(layer.padding, str):
            raise ValueError(f"{type(layer).__name__}(padding={layer.padding!r}) cannot be exported to ONNX; use "
                             "integer padding")
        self.cfg = cfg
        self.stride, self.dilation, self.groups = _pair(layer.stride), _pair(layer.dilation), layer.groups
        self.padding = _pair(layer.padding)  # type: ignore[arg-type]
        self.padding_mode = layer.padding_mode
        self.reversed_padding = layer._reversed_padding_repeated_twice
        weight, bias = _shift_constants(layer)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.cfg.quantize_input:
            x = fixed_point(x, self.cfg)
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self.reversed_padding, mode=self.padding_mode)
            padding = (0, 0)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class OnnxShiftLinear(nn.Module):
    """``Gemm`` with power-of-two weights behind the fixed-point input quantisation (a :class:`ShiftLinear`)."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: ShiftLinear) -> None:
        super().__init__()
        cfg = layer.quant_config
        self.cfg = cfg
        weight, bias = _shift_constants(layer)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.cfg.quantize_input:
            x = fixed_point(x, self.cfg)
        return F.linear(x, self.weight, self.bias)


class OnnxAdderConv2d(nn.Module):
    """``-sum |patch - w|`` in standard ops (an :class:`AdderConv2d`; zero padding counts as ``x = 0``)."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: AdderConv2d) -> None:
        super().__init__()
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            raise ValueError(f"AdderConv2d(padding={layer.padding!r}, padding_mode={layer.padding_mode!r}) cannot "
                             "be exported to ONNX; use integer zero padding")
        self.kernel, self.stride = _pair(layer.kernel_size), _pair(layer.stride)
        self.padding, self.dilation = _pair(layer.padding), _pair(layer.dilation)  # type: ignore[arg-type]
        self.groups = layer.groups
        o, cg = layer.out_channels, layer.in_channels // layer.groups
        with torch.no_grad():  # (G, O/G, Cg * kh * kw, 1): matches unfold's (c, kh, kw) order within a group
            w = layer.weight.detach().reshape(self.groups, o // self.groups, cg * self.kernel[0] * self.kernel[1], 1)
            self.register_buffer("weight", w.clone())
            self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().reshape(1, o, 1).clone())
        self.out_channels = o

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)
        cols = cols.reshape(n, self.groups, 1, -1, ho * wo)  # (N, G, 1, Cg*k*k, L)
        y = -(cols - self.weight.unsqueeze(0)).abs().sum(dim=3)  # (N, G, O/G, L)
        y = y.reshape(n, self.out_channels, ho * wo)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(n, self.out_channels, ho, wo)


def onnx_twin(module: nn.Module) -> nn.Module | None:
    """The standard-op twin of an MF layer (``None`` for any other module)."""
    if type(module) is ShiftConv2d:
        return OnnxShiftConv2d(module)
    if type(module) is ShiftLinear:
        return OnnxShiftLinear(module)
    if type(module) is AdderConv2d:
        return OnnxAdderConv2d(module)
    if type(module) is ShiftAddConv2d:
        return nn.Sequential(OnnxShiftConv2d(module), OnnxAdderConv2d(module.adder))
    return None
