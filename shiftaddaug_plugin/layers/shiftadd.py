"""ShiftAddNet composite layer: a shift convolution followed by an adder convolution (docs/ARCHITECTURE.md, §1, §2).

``ShiftAddConv2d(in, out, k, stride, padding, dilation, groups)`` computes

    y = Adder_{out→out, k, stride 1, 'same' padding, dilation, groups}( ShiftConv_{in→out, k, stride, ...}(x) + b )

as one module. It subclasses ``nn.Conv2d`` so converters, ``mmcv.build_conv_layer`` and ``ConvModule`` treat it as
a conv: its own ``weight`` / ``bias`` (and geometry attributes) are the **shift part**; the adder part is the child
``self.adder`` (:class:`~shiftaddaug_plugin.layers.adder.AdderConv2d`, no bias, zero padding). Cost counters must
count the module's own weight as a shift conv and ``.adder`` separately (it is not an ``isinstance`` of
``ShiftConv2d``, on purpose).

Normalisation: AdderNet outputs ``-Σ|x - w|`` (large, all negative) and trains only with BatchNorm after every
adder layer (docs/algorithms.md §2). The composite has **no** BatchNorm inside (none between shift and adder, as in
ShiftAddNet, whose shift and adder layers run back to back); it is a drop-in replacement for a conv that is
followed by BatchNorm (conv-BN-act blocks, ``ConvModule`` with ``norm_cfg``). Using it without a following
BatchNorm is unsupported for training.
"""
from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor, nn

from ..functional.shift import round_weight_to_power_of_two, shift_conv2d
from .adder import AdderConv2d
from .shift import _check_plain, shift_quant_config, shift_quant_repr

__all__ = ["ShiftAddConv2d", "adder_same_padding"]


def adder_same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Symmetric 'same' padding ``d·(k-1)/2`` of the composite's stride-1 adder; ``ValueError`` if it is not an
    integer (an even kernel with odd dilation would need asymmetric padding)."""
    pads = []
    for k, d in zip(kernel_size, dilation):
        total = d * (k - 1)
        if total % 2:
            raise ValueError(
                "ShiftAddConv2d needs symmetric 'same' padding for its adder layer, but "
                f"kernel_size={tuple(kernel_size)} "
                f"with dilation={tuple(dilation)} gives an odd total padding {total}; use an odd kernel size"
            )
        pads.append(total // 2)
    return pads[0], pads[1]


class ShiftAddConv2d(nn.Conv2d):
    """ShiftAddNet composite: shift conv (``weight``/``bias``) then adder conv (``.adder``), see module docstring.

    Constructor: the ``nn.Conv2d`` arguments of the shift part, then keyword-only shift quantisation settings
    (``weight_bits``, ``act_int_bits``, ``act_frac_bits``, ``act_rounding``, ``quantize_input``; see
    :class:`~shiftaddaug_plugin.layers.shift.ShiftConv2d`) and the adder's gradient scale ``eta`` (0.2). The adder
    has ``out → out`` channels, the same kernel size, dilation and groups, stride 1, 'same' zero padding and no
    bias, so the output shape equals that of the shift conv alone (= that of the conv it replaces).
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
        eta: float = 0.2,
    ) -> None:
        quant_config = shift_quant_config(weight_bits, act_int_bits, act_frac_bits, act_rounding, quantize_input)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device=device, dtype=dtype,
        )
        self.quant_config = quant_config
        self.adder = AdderConv2d(
            out_channels, out_channels, self.kernel_size, stride=1,
            padding=adder_same_padding(self.kernel_size, self.dilation), dilation=self.dilation, groups=groups,
            bias=False, device=device, dtype=dtype, eta=eta,
        )

    @property
    def eta(self) -> float:
        """Adaptive gradient scale of the adder part (AdderNet η)."""
        return float(self.adder.eta)

    def shift_forward(self, x: Tensor) -> Tensor:
        """The shift part alone: power-of-two conv of the fixed-point input, plus bias (float path)."""
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding: Any = 0
        else:
            padding = self.padding
        return shift_conv2d(
            x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups, self.quant_config
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - shift part then adder part
        return self.adder(self.shift_forward(x))

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``nn.Conv2d`` hook. Only the module's own parameters are accepted: a caller passing another weight (mmcv
        ``ConvModule(efficient_conv_bn_eval=True)`` folds the following BatchNorm into it) would skip or corrupt
        the nonlinear adder part, so that raises instead of computing something else silently."""
        if weight is not self.weight or bias is not self.bias:
            raise ValueError(
                "ShiftAddConv2d cannot take a substituted weight (e.g. a BatchNorm folded in by mmcv's "
                "efficient_conv_bn_eval): the BatchNorm follows the nonlinear adder part; disable "
                "efficient_conv_bn_eval for this layer"
            )
        return self.forward(input)

    def power_of_two_weight(self) -> Tensor:
        """The shift part's quantised weight ``sign · 2^p`` (detached)."""
        with torch.no_grad():
            return round_weight_to_power_of_two(self.weight, self.quant_config)

    @classmethod
    def from_float(cls, module: nn.Conv2d, *, eta: float = 0.2, **quant_kwargs: Any) -> "ShiftAddConv2d":
        """A composite with the geometry of the plain ``nn.Conv2d`` ``module``; its weight and bias are copied into
        the shift part. The adder part has no counterpart in a conv: it keeps its fresh initialisation."""
        _check_plain(module, nn.Conv2d, cls.__name__)
        new = cls(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode,
            device=module.weight.device, dtype=module.weight.dtype, eta=eta, **quant_kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(module.weight)
            if module.bias is not None:
                new.bias.copy_(module.bias)
        return new.train(module.training)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, {shift_quant_repr(self.quant_config)}, then adder (eta={self.eta:g})"
