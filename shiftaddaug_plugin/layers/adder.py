"""``AdderConv2d``: AdderNet convolution layer (docs/algorithms.md §2, docs/ARCHITECTURE.md "layers")."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..functional.adder import adder_conv2d

__all__ = ["AdderConv2d"]

_size_2_t = Union[int, Tuple[int, int]]


class AdderConv2d(nn.Conv2d):
    """AdderNet convolution ``Y = -sum_{c,k} |X - W| (+ bias)`` (Chen et al., CVPR 2020, eq. 2).

    A thin :class:`torch.nn.Conv2d` subclass: same constructor, same ``weight`` / ``bias`` parameters and
    state-dict names, so timm / mmcv builders and checkpoints work unchanged. The forward calls
    :func:`shiftaddaug_plugin.functional.adder.adder_conv2d`, whose backward uses AdderNet's full-precision
    weight gradient with adaptive scaling (``eta``) and the HardTanh input gradient.

    Must be followed by BatchNorm: adder outputs are all negative with a large, input-dependent magnitude;
    without normalisation training stays at chance (AdderNet §3.3, docs/algorithms.md §2).

    Differences from ``nn.Conv2d``: weights are initialised from ``N(0, 1)`` as in AdderNet (filters are compared
    with batch-normalised activations, so they live on the activations' scale; Kaiming-scale weights make all
    filters compute nearly the same ``-sum |x|``), ``from_float`` copies the given weights unchanged; ``bias`` defaults
    to False (the bias, if any, is added after the adder sum);
    the keyword-only ``eta`` sets the adaptive gradient scaling; ``padding='same'`` and non-zero padding modes
    are applied by padding the input explicitly (only ``'zeros'`` means "padding counts as x = 0").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _size_2_t, stride: _size_2_t = 1,
                 padding: Union[str, _size_2_t] = 0, dilation: _size_2_t = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *, eta: float = 0.2) -> None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (eta > 0 and math.isfinite(eta)):
            raise ValueError(f"AdderConv2d: eta must be a positive finite number (AdderNet uses 0.2), got {eta!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode, device=device,
                         dtype=dtype)
        self.eta = float(eta)

    def reset_parameters(self) -> None:
        """AdderNet initialisation: ``weight ~ N(0, 1)``, bias (if any) zero."""
        nn.init.normal_(self.weight, 0.0, 1.0)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_float(cls, module: nn.Conv2d, *, eta: float = 0.2) -> "AdderConv2d":
        """A new ``AdderConv2d`` with the geometry, device, dtype and copied weight/bias of ``module``.

        Only plain ``nn.Conv2d`` is accepted (exact type): subclasses such as timm's ``Conv2dSame`` or
        ``StdConv2d`` compute something else and must be handled by the converter.
        """
        if type(module) is not nn.Conv2d and not isinstance(module, AdderConv2d):
            raise TypeError(f"AdderConv2d.from_float expects a plain torch.nn.Conv2d, got {type(module).__name__}; "
                            f"convert subclasses with different maths (Conv2dSame, StdConv2d, ...) explicitly")
        layer = cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                    padding=module.padding, dilation=module.dilation, groups=module.groups,
                    bias=module.bias is not None, padding_mode=module.padding_mode, device=module.weight.device,
                    dtype=module.weight.dtype, eta=eta)
        with torch.no_grad():
            layer.weight.copy_(module.weight)
            if module.bias is not None and layer.bias is not None:
                layer.bias.copy_(module.bias)
        return layer

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """Adder convolution with the given weight/bias (overrides ``nn.Conv2d``'s hook so that callers of it,
        e.g. mmcv ``ConvModule``, never get a silent multiplicative conv)."""
        padding: Union[str, Tuple[int, ...]] = self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):
            mode = self.padding_mode if self.padding_mode != "zeros" else "constant"
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=mode)
            padding = (0, 0)
        out = adder_conv2d(input, weight, self.stride, padding, self.dilation,  # type: ignore[arg-type]
                           self.groups, self.eta)
        if bias is not None:
            out = out + bias.to(out.dtype).view(1, -1, 1, 1)
        return out

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002  (nn.Conv2d's argument name)
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eta={self.eta}"
