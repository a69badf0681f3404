"""Standard-op twins of the multiplication-free layers, for ONNX export (docs/deploy.md).

Each twin computes exactly what its layer's float path computes (:mod:`shiftaddaug_plugin.functional`), written in
operations every ONNX runtime has:

* shift conv / linear (DeepShift-Q, paper eq. 1-2): ``x_q = clip(floor(x * 2^f) * 2^-f, lo, hi)`` (``Round`` for
  ``act_rounding='round'``; both scalings are powers of two, i.e. shifts), then ``Conv`` / ``Gemm`` with the
  power-of-two weights ``sign * 2^p`` stored as constants and the fixed-point bias;
* adder conv (AdderNet, paper eq. 3): one custom-domain node ``shiftaddaug.AdderConv2d`` (inputs ``X``, ``W``
  [, ``B``]; attributes as ``Conv``'s) defined by an ONNX function in standard ops, ``Y = -sum_{c, taps}
  |X_patch - W|``: zero padding, patch extraction (``unfold``), ``Sub``, ``Abs``, ``ReduceSum``, ``Neg`` (+ bias),
  so any runtime executes it and a hardware tool chain can map the node to its own kernel;
* shift-add: the shift twin then the adder twin.

The twins hold detached constants: they are for inference only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

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

__all__ = ["OnnxShiftConv2d", "OnnxShiftLinear", "OnnxAdderConv2d", "AdderGeometry2d", "adder_conv_standard_ops",
           "onnx_twin", "fixed_point", "ADDER_DOMAIN", "ADDER_OP"]

#: The custom ONNX domain and op of adder convolutions (defined by ONNX functions, :mod:`.onnx_functions`).
ADDER_DOMAIN, ADDER_OP = "shiftaddaug", "AdderConv2d"
#: Namespace of the torch custom op that traces to the ONNX adder node.
TORCH_OP_NAMESPACE = "shiftaddaug"


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


@dataclass(frozen=True)
class AdderGeometry2d:
    """The static configuration of one adder conv (the attributes of its ONNX node)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_channels: int
    bias: bool

    @property
    def overload(self) -> str:
        """The ONNX function overload that implements this configuration."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return f"k{kh}x{kw}_s{sh}x{sw}_p{ph}x{pw}_d{dh}x{dw}_g{self.groups}_o{self.out_channels}" + \
            ("_b" if self.bias else "")


def _output_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def adder_conv_standard_ops(x: Tensor, weight: Tensor, bias: Tensor | None, geo: AdderGeometry2d) -> Tensor:
    """``Y = -sum_{c, taps} |X_patch - W|`` (+ bias) written with ``unfold``, ``Sub``, ``Abs``, ``ReduceSum``,
    ``Neg``: the body of the ``shiftaddaug.AdderConv2d`` ONNX function (zero padding counts as ``x = 0``)."""
    n, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo.kernel, geo.stride, geo.padding, geo.dilation
    g, o = geo.groups, geo.out_channels
    ho, wo = _output_size(h, kh, sh, ph, dh), _output_size(w, kw, sw, pw, dw)
    if geo.kernel == (1, 1) and geo.padding == (0, 0):  # pointwise: the patches are the (strided) pixels
        cols = x[:, :, ::sh, ::sw]
    else:
        cols = F.unfold(x, geo.kernel, dilation=geo.dilation, padding=geo.padding, stride=geo.stride)
    cols = cols.reshape(n, g, 1, -1, ho * wo)  # (N, G, 1, Cg*kh*kw, L)
    wg = weight.reshape(1, g, o // g, -1, 1)  # (c, kh, kw) order within a group, as unfold's
    y = -(cols - wg).abs().sum(dim=3).reshape(n, o, ho * wo)  # (N, O, L)
    if bias is not None:
        y = y + bias.reshape(1, o, 1)
    return y.reshape(n, o, ho, wo)


@torch.library.custom_op(f"{TORCH_OP_NAMESPACE}::adder_conv2d_standard_ops", mutates_args=())
def _adder_conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], kernel: list[int], stride: list[int],
                   padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """Eager: :func:`adder_conv_standard_ops`. Traced for ONNX: one ``shiftaddaug::AdderConv2d`` node (below)."""
    geo = AdderGeometry2d((kernel[0], kernel[1]), (stride[0], stride[1]), (padding[0], padding[1]),
                          (dilation[0], dilation[1]), groups, weight.shape[0], bias is not None)
    return adder_conv_standard_ops(x, weight, bias, geo)


@_adder_conv_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], kernel: list[int], stride: list[int], padding: list[int],
      dilation: list[int], groups: int) -> Tensor:
    ho, wo = (_output_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(2))
    return x.new_empty(x.shape[0], weight.shape[0], ho, wo)


def _adder_conv_symbolic(g: Any, x: Any, weight: Any, bias: Any, kernel: Any, stride: Any, padding: Any,
                         dilation: Any, groups: Any) -> Any:
    """The ONNX node of an adder conv, with Conv's attributes; :mod:`.onnx_functions` attaches its definition."""
    from torch.onnx import symbolic_helper as sh

    k, s, p, d = (list(sh._maybe_get_const(v, "is")) for v in (kernel, stride, padding, dilation))
    grp = int(sh._maybe_get_const(groups, "i"))
    has_bias = not sh._is_none(bias)
    out_channels = int(sh._get_tensor_sizes(weight)[0])
    y = g.op(f"{ADDER_DOMAIN}::{ADDER_OP}", x, weight, *([bias] if has_bias else []), kernel_shape_i=k,
             strides_i=s, pads_i=[p[0], p[1], p[0], p[1]], dilations_i=d, group_i=grp)
    sizes = sh._get_tensor_sizes(x)
    if sizes is not None and len(sizes) == 4:
        out = [None if sizes[2 + i] is None else _output_size(sizes[2 + i], k[i], s[i], p[i], d[i]) for i in range(2)]
        y.setType(x.type().with_sizes([sizes[0], out_channels, *out]))
    return y


for _opset in range(11, 21):  # the opsets deploy.onnx_export accepts
    torch.onnx.register_custom_op_symbolic(f"{TORCH_OP_NAMESPACE}::adder_conv2d_standard_ops", _adder_conv_symbolic,
                                           _opset)


class OnnxAdderConv2d(nn.Module):
    """An :class:`AdderConv2d` for inference and ONNX export: one ``shiftaddaug.AdderConv2d`` node."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: AdderConv2d) -> None:
        super().__init__()
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            raise ValueError(f"AdderConv2d(padding={layer.padding!r}, padding_mode={layer.padding_mode!r}) cannot "
                             "be exported to ONNX; use integer zero padding")
        self.geometry = AdderGeometry2d(_pair(layer.kernel_size), _pair(layer.stride),
                                        _pair(layer.padding), _pair(layer.dilation),  # type: ignore[arg-type]
                                        layer.groups, layer.out_channels, layer.bias is not None)
        self.register_buffer("weight", layer.weight.detach().clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        geo = self.geometry
        return _adder_conv_op(x, self.weight, self.bias, list(geo.kernel), list(geo.stride), list(geo.padding),
                              list(geo.dilation), geo.groups)


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
