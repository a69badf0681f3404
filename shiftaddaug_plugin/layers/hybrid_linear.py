"""``HybridLinear``: a shift (or multiplicative) target linear layer reading the leading input features (eq. 4).

The maths and notation are in :mod:`shiftaddaug_plugin.layers.hybrid`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.shift import (
    quantize_input_fixed_point,
    quantize_leading_channels,
    round_weight_to_power_of_two,
    shift_linear,
)
from ..modes import Mode
from ..ops import Op, check_op_kwargs
from .hybrid_conv import shift_config
from .shift import ShiftLinear

__all__ = ["HybridLinear"]


class HybridLinear(nn.Linear):
    """Classifier with a shift target part and multiplicative augmented inputs (ShiftAddAug eq. 4, docs/algorithms.md
    §3).

    ``in_features`` is the maximum width; outputs are not widened. ``Mode.TARGET``: ``Y = ShiftLinear(X)`` with
    ``W[:, :I_t]`` and the bias; ``Mode.AUGMENTED``: ``Y = shift_linear(X[..., :I_t], W[:, :I_t], bias) +
    linear(X[..., I_t:], W[:, I_t:I_in])`` (the bias belongs to the MF part), computed as one linear layer.
    ``op='mult'`` or ``mf_enabled=False`` make the target part an ordinary linear layer.
    ``op_kwargs``: shift quantisation settings.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_in_features: int,
        op: Op | str = Op.SHIFT,
        op_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        kwargs = check_op_kwargs("HybridLinear", op, op_kwargs, linear=True)
        op = Op.parse(op)
        if not 1 <= target_in_features <= in_features:
            raise ValueError(f"target_in_features={target_in_features} must lie in [1, in_features={in_features}]")
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._target_in = int(target_in_features)
        self.op = op
        self.op_kwargs: dict[str, Any] = kwargs
        self.quant_config = shift_config(kwargs) if op == "shift" else None
        self.mf_enabled = True
        self.mode = Mode.AUGMENTED

    @property
    def target_in_features(self) -> int:
        """Input width of the target (exported) classifier."""
        return self._target_in

    @property
    def target_is_multiplicative(self) -> bool:
        """The target part multiplies: ``op='mult'`` (NetAug) or MF switched off (block-variant schedule)."""
        return not self.mf_enabled or self.op == "mult"

    def _mf(self, x_t: Tensor) -> Tensor:
        w = self.weight[:, : self._target_in]
        if self.target_is_multiplicative:
            return F.linear(x_t, w, self.bias)
        return shift_linear(x_t, w, self.bias, self.quant_config)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        c_in = x.shape[-1]
        if self.mode == Mode.TARGET:
            if c_in != self._target_in:
                raise ValueError(f"HybridLinear in TARGET mode expects {self._target_in} input features, got {c_in}")
            return self._mf(x)
        if not self._target_in <= c_in <= self.in_features:
            raise ValueError(f"HybridLinear in AUGMENTED mode expects between target_in_features={self._target_in} "
                             f"and in_features={self.in_features} input features, got {c_in}")
        if c_in == self._target_in:
            return self._mf(x)
        return self._augmented(x, c_in)

    def _augmented(self, x: Tensor, c_in: int) -> Tensor:
        """Eq. 4 as one linear over the active inputs: outputs are not widened, so ``MF(X_t, W_t) + X_a W_a^T`` is
        ``[Q(X_t), X_a] [Q(W_t), W_a]^T`` (shift target: ``Q`` = fixed-point input, power-of-two weight, fixed-point
        bias; multiplicative target: no ``Q``), the same sum without slicing the input or adding two outputs."""
        i_t = self._target_in
        if self.target_is_multiplicative:
            return F.linear(x, self.weight[:, :c_in], self.bias)
        cfg = self.quant_config
        assert cfg is not None
        bias: Tensor | None = self.bias
        if cfg.quantize_input:
            if x.dim() == 2:
                x = quantize_leading_channels(x, i_t, cfg)
            else:
                x = torch.cat([quantize_input_fixed_point(x[..., :i_t], cfg), x[..., i_t:]], -1)
            bias = None if bias is None else quantize_input_fixed_point(bias, cfg)
        w = torch.cat([round_weight_to_power_of_two(self.weight[:, :i_t], cfg), self.weight[:, i_t:c_in]], 1)
        return F.linear(x, w, bias)

    def export(self) -> nn.Module:
        """New ``ShiftLinear`` (or ``nn.Linear`` for ``op='mult'`` / ``mf_enabled=False``) of ``target_in_features``
        inputs with cloned weights; its output equals ``Mode.TARGET``."""
        factory: dict[str, Any] = dict(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            if self.target_is_multiplicative:
                out: nn.Linear = nn.Linear(self._target_in, self.out_features, self.bias is not None, **factory)
            else:
                out = ShiftLinear(self._target_in, self.out_features, self.bias is not None, **factory,
                                  **self.op_kwargs)
            out.weight.copy_(self.weight[:, : self._target_in].detach())
            if self.bias is not None:
                out.bias.copy_(self.bias.detach())
        return out.train(self.training)

    def fuse(self) -> nn.Module:
        """timm ``reparameterize_model`` hook: returns :meth:`export`."""
        return self.export()

    def reparameterize(self) -> nn.Module:
        """Alias of :meth:`export`."""
        return self.export()

    def extra_repr(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.op_kwargs.items())
        return (f"{super().extra_repr()}, target_in_features={self._target_in}, op={self.op}"
                f"{', ' + extra if extra else ''}, mf_enabled={self.mf_enabled}, mode={self.mode.value}")
