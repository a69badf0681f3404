"""``HybridConv2d``: MF target channels + multiplicative augmented channels of one conv (ShiftAddAug eq. 4).

The maths and notation are in :mod:`shiftaddaug_plugin.layers.hybrid`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.adder import adder_conv2d
from ..functional.shift import (
    ShiftQuantConfig,
    quantize_input_fixed_point,
    quantize_leading_channels,
    round_weight_to_power_of_two,
    shift_conv2d,
)
from ..modes import Mode
from ..ops import OP_TABLE, SHIFT_KWARGS, Op, check_op_kwargs
from .adder import AdderConv2d
from .remap import PiecewiseRemap, WeightRemap
from .shift import ShiftConv2d
from .shiftadd import ShiftAddConv2d, adder_same_padding

__all__ = ["HybridConv2d", "shift_config", "add_bias"]


def shift_config(kwargs: Mapping[str, Any]) -> ShiftQuantConfig:
    return ShiftQuantConfig(**{k: v for k, v in kwargs.items() if k in SHIFT_KWARGS})


def _cat_channels(parts: list[Tensor]) -> Tensor:
    """``torch.cat`` along channels after promoting to a common dtype (the fp32 adder part meets bf16 convs)."""
    if len(parts) == 1:
        return parts[0]
    dtype = parts[0].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.to(dtype) for p in parts], dim=1)


def _adder_fp32(x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any, groups: int, eta: float) -> Tensor:
    """AdderNet conv with its sums in (at least) fp32, also under autocast (docs/algorithms.md §2).

    Under autocast the fp32 result is returned (like autocast's fp32 ops); outside autocast it is cast back to the
    input dtype."""
    device_type = x.device.type
    autocast_on = torch.is_autocast_enabled(device_type) if device_type in ("cpu", "cuda", "xpu", "mps") else False
    compute = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
    if autocast_on:
        with torch.autocast(device_type=device_type, enabled=False):
            return adder_conv2d(x.to(compute), weight.to(compute), stride, padding, dilation, groups, eta)
    y = adder_conv2d(x.to(compute), weight.to(compute), stride, padding, dilation, groups, eta)
    return y.to(torch.promote_types(x.dtype, weight.dtype))


def add_bias(y: Tensor, bias: Tensor | None) -> Tensor:
    return y if bias is None else y + bias.view(1, -1, 1, 1).to(y.dtype)


class HybridConv2d(nn.Conv2d):
    """Conv whose target channels use a multiplication-free operator (ShiftAddAug eq. 4, docs/algorithms.md §3).

    Args:
        in_channels, out_channels: the **maximum** (augmented) widths; ``weight`` has shape
            ``(out_channels, in_channels // groups, kh, kw)`` and ``bias`` (if any) ``(out_channels,)``.
        kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype: as ``nn.Conv2d``.
            Only ``groups=1`` (dense / pointwise) and depthwise (``groups == in_channels == out_channels``) exist.
        target_in_channels, target_out_channels: widths of the target (exported) layer, the leading slice.
            Depthwise layers need ``target_in_channels == target_out_channels``.
        op: target operator: ``'shift'`` (DeepShift-Q, :func:`shift_conv2d`), ``'adder'`` (AdderNet,
            :func:`adder_conv2d`), ``'shiftadd'`` (ShiftAddNet composite: shift conv, then an adder conv of
            ``O_t -> O_t`` channels, same kernel size and groups, stride 1, same padding) or ``'mult'`` (plain conv).
        op_kwargs: quantisation / adder settings: ``weight_bits``, ``act_int_bits``, ``act_frac_bits``,
            ``act_rounding``, ``quantize_input`` (shift, shiftadd) and ``eta`` (adder, shiftadd). Unknown keys
            raise ``ValueError``.
        remap: heterogeneous weight sharing (eq. 5) for ``'adder'`` / ``'shiftadd'``: ``None``/``False`` (off),
            ``True`` (default :class:`WeightRemap`), a ``dict`` of :class:`WeightRemap` keyword arguments, a
            :class:`WeightRemap` instance, or a :class:`PiecewiseRemap` (ShiftAddNAS prior art); child ``remap``.
            For ``'adder'`` the adder reads ``r(FC(W[:O_t, :I_t]))``; for ``'shiftadd'`` the adder sub-layer reads
            ``r(FC(adder_weight))`` and the shift part the stored weight.

    Attributes (the converter's interface):
        target_in_channels, target_out_channels (read-only), active_out_channels (augmented output width,
        ``target_out <= v <= out_channels``, default ``out_channels``), mf_enabled (``False``: the target part is an
        ordinary conv, block-variant training §6), mode (:class:`Mode`, default ``AUGMENTED``), op, op_kwargs,
        remap, and for ``'shiftadd'`` the parameter ``adder_weight`` of shape ``(O_t, O_t // g_t, kh, kw)`` with
        ``g_t = 1`` (dense) or ``C_t`` (depthwise). State-dict keys: ``weight``, ``bias``, ``adder_weight``,
        ``remap.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_in_channels: int,
        target_out_channels: int,
        op: Op | str = Op.SHIFT,
        op_kwargs: Mapping[str, Any] | None = None,
        remap: bool | Mapping[str, Any] | WeightRemap | PiecewiseRemap | None = None,
    ) -> None:
        kwargs = check_op_kwargs("HybridConv2d", op, op_kwargs)
        op = Op.parse(op)
        depthwise = groups != 1
        if depthwise and not (groups == in_channels == out_channels):
            raise ValueError(
                f"HybridConv2d supports groups=1 (dense/pointwise) or depthwise (groups == in == out), got "
                f"groups={groups}, in={in_channels}, out={out_channels}; split grouped convs into per-group layers "
                "or exclude this layer from conversion (filter_fn)"
            )
        if not 1 <= target_in_channels <= in_channels:
            raise ValueError(f"target_in_channels={target_in_channels} must lie in [1, in_channels={in_channels}]")
        if not 1 <= target_out_channels <= out_channels:
            raise ValueError(f"target_out_channels={target_out_channels} must lie in [1, out_channels={out_channels}]")
        if depthwise and target_in_channels != target_out_channels:
            raise ValueError(
                f"depthwise HybridConv2d needs target_in_channels == target_out_channels, got {target_in_channels} "
                f"and {target_out_channels}; use the same target width for both"
            )
        if remap not in (None, False) and not OP_TABLE[op].has_adder:
            raise ValueError(f"remap (eq. 5) only applies to op='adder' or 'shiftadd', not op={op!r}; pass remap=None")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._target_in = int(target_in_channels)
        self._target_out = int(target_out_channels)
        self.op = op
        self.op_kwargs = kwargs
        self.depthwise = depthwise
        self._active_out = out_channels
        self.mf_enabled = True
        self.mode = Mode.AUGMENTED
        self.quant_config = shift_config(kwargs) if OP_TABLE[op].has_shift else None
        self.eta = float(kwargs.get("eta", 0.2))
        if op == "shiftadd":
            self._adder_padding = adder_same_padding(self.kernel_size, self.dilation)  # ValueError for even kernels
            g_t = self._target_out if depthwise else 1
            self.adder_weight = nn.Parameter(torch.empty(
                (self._target_out, self._target_out // g_t, *self.kernel_size), device=device, dtype=dtype))
            nn.init.normal_(self.adder_weight, 0.0, 1.0)  # AdderNet initialisation (see ConvertConfig.adder_init_std)
        else:
            self.register_parameter("adder_weight", None)
        self.remap: WeightRemap | PiecewiseRemap | None
        if isinstance(remap, PiecewiseRemap):
            self.remap = remap
        elif isinstance(remap, WeightRemap):
            if remap.kernel_size != self.kernel_size:
                raise ValueError(f"remap was built for kernel {remap.kernel_size}, this layer has {self.kernel_size}")
            self.remap = remap
        elif remap is True:
            self.remap = WeightRemap(self.kernel_size, device=device, dtype=dtype)
        elif isinstance(remap, Mapping):
            self.remap = WeightRemap(self.kernel_size, device=device, dtype=dtype, **dict(remap))
        elif remap in (None, False):
            self.remap = None
        else:
            raise TypeError(f"remap must be None, a bool, a dict of WeightRemap kwargs, a WeightRemap or a "
                            f"PiecewiseRemap, got "
                            f"{type(remap).__name__}")

    # ----------------------------------------------------------------------------------------------- widths
    @property
    def target_in_channels(self) -> int:
        """Input width of the target (exported) layer: the leading ``[:I_t]`` input channels."""
        return self._target_in

    @property
    def target_out_channels(self) -> int:
        """Output width of the target (exported) layer: the leading ``[:O_t]`` output channels."""
        return self._target_out

    @property
    def active_out_channels(self) -> int:
        """Output width in ``Mode.AUGMENTED`` (dense / pointwise), set per step by the width sampler."""
        return self._active_out

    @active_out_channels.setter
    def active_out_channels(self, value: int) -> None:
        value = int(value)
        if not self._target_out <= value <= self.out_channels:
            raise ValueError(f"active_out_channels={value} must lie in [target_out_channels={self._target_out}, "
                             f"out_channels={self.out_channels}]")
        self._active_out = value

    # ----------------------------------------------------------------------------------------------- pieces
    def _geometry(self) -> tuple[Any, Any]:
        """(padding for the ops, padding to apply to the input beforehand) honouring padding strings/modes."""
        if self.padding_mode == "zeros" and not isinstance(self.padding, str):
            return self.padding, None
        return (0, 0), self._reversed_padding_repeated_twice

    def _pre_pad(self, x: Tensor) -> Tensor:
        _, pad = self._geometry()
        if pad is None or not any(pad):
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, pad, mode=mode)

    @property
    def target_is_multiplicative(self) -> bool:
        """The target part multiplies: ``op='mult'`` (NetAug) or MF switched off (block-variant schedule)."""
        return not self.mf_enabled or self.op == "mult"

    def _target_weight(self) -> Tensor:
        if self.depthwise:
            return self.weight[: self._target_out]
        return self.weight[: self._target_out, : self._target_in]

    def _target_bias(self) -> Tensor | None:
        return None if self.bias is None else self.bias[: self._target_out]

    def adder_weight_for_target(self) -> Tensor | None:
        """The weight the target's adder reads: ``r(FC(.))`` of the stored tensor when remapped (eq. 5)."""
        if self.op == "adder":
            w = self._target_weight()
        elif self.op == "shiftadd":
            w = self.adder_weight
        else:
            return None
        return w if self.remap is None else self.remap(w)

    def _mf(self, x_t: Tensor) -> Tensor:
        """Target part on the (pre-padded) target input: ``MF(X_t, W_t)`` + ``bias[:O_t]``."""
        padding, _ = self._geometry()
        groups = self._target_out if self.depthwise else 1
        w, b = self._target_weight(), self._target_bias()
        if self.target_is_multiplicative:
            return F.conv2d(x_t, w, b, self.stride, padding, self.dilation, groups)
        if self.op == "shift":
            return shift_conv2d(x_t, w, b, self.stride, padding, self.dilation, groups, self.quant_config)
        if self.op == "adder":
            y = _adder_fp32(x_t, self.adder_weight_for_target(), self.stride, padding, self.dilation, groups, self.eta)
            return add_bias(y, b)
        # shiftadd: ShiftAddNet composite = shift conv (with bias) then adder conv O_t -> O_t, stride 1, same padding
        y = shift_conv2d(x_t, w, b, self.stride, padding, self.dilation, groups, self.quant_config)
        return _adder_fp32(y, self.adder_weight_for_target(), 1, self._adder_padding, self.dilation,
                           groups, self.eta)

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        if x.dim() != 4:
            raise ValueError(f"HybridConv2d expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        c_in = x.shape[1]
        if self.mode == Mode.TARGET:
            if c_in != self._target_in:
                raise ValueError(f"HybridConv2d in TARGET mode expects {self._target_in} input channels, got {c_in}; "
                                 "feed the target network's activations (set_mode(model, Mode.TARGET) on all layers)")
            return self._mf(self._pre_pad(x))
        if self.mode != Mode.AUGMENTED:
            raise ValueError(f"unknown mode {self.mode!r}; use shiftaddaug_plugin.Mode")
        if not self._target_in <= c_in <= self.in_channels:
            raise ValueError(f"HybridConv2d in AUGMENTED mode expects between target_in_channels={self._target_in} "
                             f"and in_channels={self.in_channels} input channels, got {c_in}")
        x = self._pre_pad(x)
        padding, _ = self._geometry()
        if self.target_is_multiplicative:  # every part of eq. 4 multiplicative: one conv over the slice
            return self._mult_augmented(x, c_in, padding)
        if self.op == "shift":
            return self._shift_augmented(x, c_in, padding)
        if self.op == "adder" and not self.depthwise and c_in > self._target_in and self._active_out > self._target_out:
            return self._adder_augmented(x, c_in, padding)
        x_t, x_a = x[:, : self._target_in], x[:, self._target_in:]
        y_t = self._mf(x_t)
        if self.depthwise:
            if c_in == self._target_in:
                return y_t
            w_a = self.weight[self._target_out: c_in]
            b_a = None if self.bias is None else self.bias[self._target_out: c_in]
            y_a = F.conv2d(x_a, w_a, b_a, self.stride, padding, self.dilation, c_in - self._target_in)
            return _cat_channels([y_t, y_a])
        if c_in > self._target_in:
            y_t = y_t + F.conv2d(x_a, self.weight[: self._target_out, self._target_in: c_in], None,
                                 self.stride, padding, self.dilation, 1)
        o_a = self._active_out
        if o_a == self._target_out:
            return y_t
        b_a = None if self.bias is None else self.bias[self._target_out: o_a]
        y_a = F.conv2d(x, self.weight[self._target_out: o_a, :c_in], b_a, self.stride, padding, self.dilation, 1)
        return _cat_channels([y_t, y_a])

    def _mult_augmented(self, x: Tensor, c_in: int, padding: Any) -> Tensor:
        """Eq. 4 when the target operator is multiplication too (NetAug, ``mf_enabled=False``): the target and the
        augmented outputs read adjacent slices of one weight, so they are one conv over ``W[:O_a, :C_in]`` (no
        slicing into parts, no concatenation)."""
        if self.depthwise:
            b = None if self.bias is None else self.bias[:c_in]
            return F.conv2d(x, self.weight[:c_in], b, self.stride, padding, self.dilation, c_in)
        o_a = self._active_out
        b = None if self.bias is None else self.bias[:o_a]
        return F.conv2d(x, self.weight[:o_a, :c_in], b, self.stride, padding, self.dilation, 1)

    def _shift_augmented(self, x: Tensor, c_in: int, padding: Any) -> Tensor:
        """Eq. 4 with a shift target as one conv: the target part of the input is moved onto the fixed-point grid
        and the target block of the weight onto powers of two, then both are joined with the untouched augmented
        slices (``[Q(X_t), X_a]`` and ``[[Q(W_t), W[:O_t, I_t:]], [W[O_t:O_a, :I_in]]]``). The augmented outputs
        therefore read the fixed-point ``Q(X_t)`` (within ``2^-f`` of ``X_t``), as a deployed hybrid layer would:
        its input activation is one fixed-point tensor."""
        cfg = self.quant_config
        assert cfg is not None
        i_t, o_t = self._target_in, self._target_out
        x_in = quantize_leading_channels(x, i_t, cfg) if cfg.quantize_input else x
        w_t = round_weight_to_power_of_two(self._target_weight(), cfg)
        b_t = self._target_bias()
        if b_t is not None and cfg.quantize_input:
            b_t = quantize_input_fixed_point(b_t, cfg)
        o_a = c_in if self.depthwise else self._active_out
        if self.depthwise:
            w = torch.cat([w_t, self.weight[o_t:c_in]]) if c_in > i_t else w_t
        else:
            w = torch.cat([w_t, self.weight[:o_t, i_t:c_in]], 1) if c_in > i_t else w_t
            w = torch.cat([w, self.weight[o_t:o_a, :c_in]]) if o_a > o_t else w
        b = b_t if (b_t is None or o_a == o_t) else torch.cat([b_t, self.bias[o_t:o_a]])
        return F.conv2d(x_in, w, b, self.stride, padding, self.dilation, c_in if self.depthwise else 1)

    def _adder_augmented(self, x: Tensor, c_in: int, padding: Any) -> Tensor:
        """Eq. 4 with a dense adder target, ``I_in > I_t`` and ``O_a > O_t``: one conv over ``W[:O_a, :I_in]``
        with the target block ``[:O_t, :I_t]`` zeroed computes every multiplicative term, and the adder output
        is added into its first ``O_t`` channels in place (no slicing of the input, no concatenation)."""
        i_t, o_t, o_a = self._target_in, self._target_out, self._active_out
        y_mf = _adder_fp32(x[:, :i_t], self.adder_weight_for_target(), self.stride, padding, self.dilation, 1,
                           self.eta)
        w = self.weight[:o_a, :c_in].clone()
        w[:o_t, :i_t] = 0
        b = None if self.bias is None else self.bias[:o_a]
        y = F.conv2d(x, w, b, self.stride, padding, self.dilation, 1)
        dtype = torch.promote_types(y.dtype, y_mf.dtype)
        y = y if y.dtype == dtype else y.to(dtype)
        y[:, :o_t] += y_mf.to(dtype)
        return y

    # ----------------------------------------------------------------------------------------------- export
    def export(self) -> nn.Module:
        """A new plain target layer with cloned weights at the target width (its output equals ``Mode.TARGET``).

        ``ShiftConv2d`` (shift), ``AdderConv2d`` (adder; weight ``r(FC(W_t))`` when remapped), ``ShiftAddConv2d``
        (shiftadd; ``.adder.weight = r(FC(adder_weight))`` when remapped), ``nn.Conv2d`` for ``op='mult'`` or
        ``mf_enabled=False``. The result is on this layer's device/dtype and in its train/eval state."""
        groups = self._target_out if self.depthwise else 1
        common: dict[str, Any] = dict(
            kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=groups, bias=self.bias is not None, padding_mode=self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        shift_kwargs = {k: v for k, v in self.op_kwargs.items() if k in SHIFT_KWARGS}
        with torch.no_grad():
            if self.target_is_multiplicative:
                out: nn.Conv2d = nn.Conv2d(self._target_in, self._target_out, **common)
            elif self.op == "shift":

                out = ShiftConv2d(self._target_in, self._target_out, **common, **shift_kwargs)
            elif self.op == "adder":

                out = AdderConv2d(self._target_in, self._target_out, **common, eta=self.eta)
            else:

                out = ShiftAddConv2d(self._target_in, self._target_out, **common, **shift_kwargs, eta=self.eta)
            weight = self._target_weight()
            if self.op == "adder" and self.mf_enabled:
                weight = self.adder_weight_for_target()
            out.weight.copy_(weight.detach())
            if self.bias is not None:
                out.bias.copy_(self._target_bias().detach())
            if self.op == "shiftadd" and self.mf_enabled:
                out.adder.weight.copy_(self.adder_weight_for_target().detach())
        return out.train(self.training)

    def fuse(self) -> nn.Module:
        """timm ``reparameterize_model`` hook: returns :meth:`export` (timm replaces this module with it)."""
        return self.export()

    def reparameterize(self) -> nn.Module:
        """Alias of :meth:`export` (the slim target layer). Note timm's ``reparameterize_model`` prefers
        :meth:`fuse`, whose result replaces this module in the parent."""
        return self.export()

    def extra_repr(self) -> str:
        s = super().extra_repr()
        extra = ", ".join(f"{k}={v!r}" for k, v in self.op_kwargs.items())
        return (f"{s}, target=({self._target_in}->{self._target_out}), active_out={self._active_out}, op={self.op}"
                f"{', ' + extra if extra else ''}, mf_enabled={self.mf_enabled}, mode={self.mode.value}")
