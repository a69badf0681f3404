"""Hybrid layers: multiplication-free target channels + multiplicative augmented channels (ShiftAddAug eq. 4).

docs/algorithms.md §3. Each layer stores **one max-width weight**; the target network is its leading slice (NetAug). The
converter builds these layers, sets the augmented widths per training step (``active_out_channels`` here, the
input width is read from the incoming tensor), switches ``mode`` with :func:`shiftaddaug_plugin.modes.set_mode`,
and finally calls :meth:`export` on every layer to obtain the slim multiplication-free target network.

Notation: ``I_t``/``O_t`` target input/output widths, ``I_in = x.shape[1]`` the width of the incoming tensor,
``O_a = active_out_channels``, ``MF`` the target operator (shift, adder, shift-add composite), ``conv`` an
ordinary multiplicative convolution.

* ``Mode.TARGET``: ``Y = MF(X, W[:O_t, :I_t])`` (+ ``bias[:O_t]``); ``X`` must have exactly ``I_t`` channels.
* ``Mode.AUGMENTED``, dense / pointwise (``groups=1``)::

      Y_t = MF(X[:, :I_t], W[:O_t, :I_t]) + conv(X[:, I_t:], W[:O_t, I_t:I_in])   (+ bias[:O_t])
      Y_a = conv(X, W[O_t:O_a, :I_in])                                              (+ bias[O_t:O_a])
      Y   = cat(Y_t, Y_a)

* ``Mode.AUGMENTED``, depthwise (``groups == in == out``): ``Y = cat(MF(X[:, :C_t], W[:C_t]), conv(X[:, C_t:],
  W[C_t:C_in]))`` with ``C_in = x.shape[1]``; the output width follows the input, ``active_out_channels`` is unused.

Heterogeneous weight sharing (eq. 5, docs/algorithms.md §5): with ``remap`` the adder of an ``'adder'`` layer reads
``r(FC(W[:O_t, :I_t]))`` instead of the stored (Gaussian) slice; the multiplicative part always reads the stored
weight, shift layers read it through power-of-two rounding.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.adder import adder_conv2d
from ..functional.shift import ShiftQuantConfig, shift_conv2d, shift_linear
from ..modes import Mode
from ..ops import OP_TABLE, SHIFT_KWARGS, Op, check_op_kwargs
from .remap import PiecewiseRemap, WeightRemap
from .shiftadd import adder_same_padding

__all__ = ["HybridConv2d", "HybridLinear", "HybridBatchNorm2d", "HybridBatchNormAct2d"]

def _shift_config(kwargs: Mapping[str, Any]) -> ShiftQuantConfig:
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


def _add_bias(y: Tensor, bias: Tensor | None) -> Tensor:
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
        self.quant_config = _shift_config(kwargs) if OP_TABLE[op].has_shift else None
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
        if not self.mf_enabled or self.op == "mult":
            return F.conv2d(x_t, w, b, self.stride, padding, self.dilation, groups)
        if self.op == "shift":
            return shift_conv2d(x_t, w, b, self.stride, padding, self.dilation, groups, self.quant_config)
        if self.op == "adder":
            y = _adder_fp32(x_t, self.adder_weight_for_target(), self.stride, padding, self.dilation, groups, self.eta)
            return _add_bias(y, b)
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
            if not self.mf_enabled or self.op == "mult":
                out: nn.Conv2d = nn.Conv2d(self._target_in, self._target_out, **common)
            elif self.op == "shift":
                from .shift import ShiftConv2d

                out = ShiftConv2d(self._target_in, self._target_out, **common, **shift_kwargs)
            elif self.op == "adder":
                from .adder import AdderConv2d

                out = AdderConv2d(self._target_in, self._target_out, **common, eta=self.eta)
            else:
                from .shiftadd import ShiftAddConv2d

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


class HybridLinear(nn.Linear):
    """Classifier with a shift target part and multiplicative augmented inputs (ShiftAddAug eq. 4, docs/algorithms.md §3).

    ``in_features`` is the maximum width; outputs are not widened. ``Mode.TARGET``: ``Y = ShiftLinear(X)`` with
    ``W[:, :I_t]`` and the bias; ``Mode.AUGMENTED``: ``Y = shift_linear(X[..., :I_t], W[:, :I_t], bias) +
    linear(X[..., I_t:], W[:, I_t:I_in])`` (the bias belongs to the MF part). ``op='mult'`` or ``mf_enabled=False``
    make the target part an ordinary linear layer. ``op_kwargs``: shift quantisation settings.
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
        self.op_kwargs = kwargs
        self.quant_config = _shift_config(kwargs) if op == "shift" else None
        self.mf_enabled = True
        self.mode = Mode.AUGMENTED

    @property
    def target_in_features(self) -> int:
        """Input width of the target (exported) classifier."""
        return self._target_in

    def _mf(self, x_t: Tensor) -> Tensor:
        w = self.weight[:, : self._target_in]
        if not self.mf_enabled or self.op == "mult":
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
        y = self._mf(x[..., : self._target_in])
        if c_in > self._target_in:
            y = y + F.linear(x[..., self._target_in:], self.weight[:, self._target_in: c_in])
        return y

    def export(self) -> nn.Module:
        """New ``ShiftLinear`` (or ``nn.Linear`` for ``op='mult'`` / ``mf_enabled=False``) of ``target_in_features``
        inputs with cloned weights; its output equals ``Mode.TARGET``."""
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            if not self.mf_enabled or self.op == "mult":
                out: nn.Linear = nn.Linear(self._target_in, self.out_features, self.bias is not None, **factory)
            else:
                from .shift import ShiftLinear

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


class HybridBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm widened with its hybrid conv (docs/algorithms.md §3): the leading ``x.shape[1]`` channels are used.

    ``num_features`` is the maximum width. ``forward`` slices ``weight``, ``bias``, ``running_mean`` and
    ``running_var`` to the input's channel count; the running statistics of that leading slice are updated in place
    (the rest stay untouched); ``num_batches_tracked`` is shared. In ``Mode.TARGET`` the input must have exactly
    ``target_num_features`` channels. :meth:`export` returns an ``nn.BatchNorm2d`` with cloned target slices.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_num_features: int,
    ) -> None:
        if not 1 <= target_num_features <= num_features:
            raise ValueError(f"target_num_features={target_num_features} must lie in [1, num_features={num_features}]")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.target_num_features = int(target_num_features)
        self.mode = Mode.AUGMENTED

    def _batch_norm(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        c = x.shape[1]
        if self.mode == Mode.TARGET and c != self.target_num_features:
            raise ValueError(f"{type(self).__name__} in TARGET mode expects {self.target_num_features} channels, "
                             f"got {c}")
        if not 1 <= c <= self.num_features:
            raise ValueError(f"{type(self).__name__} has at most {self.num_features} channels, got {c}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        # basic slices of contiguous 1-D buffers are views: batch_norm's in-place update reaches the buffers
        running_mean = self.running_mean[:c] if track and self.running_mean is not None else None
        running_var = self.running_var[:c] if track and self.running_var is not None else None
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, factor, self.eps)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        return self._batch_norm(x)

    def _export_bn(self, out: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
        with torch.no_grad():
            if self.weight is not None:
                out.weight.copy_(self.weight[:n].detach())
                out.bias.copy_(self.bias[:n].detach())
            if self.running_mean is not None:
                out.running_mean.copy_(self.running_mean[:n])
                out.running_var.copy_(self.running_var[:n])
                out.num_batches_tracked.copy_(self.num_batches_tracked)
        return out.train(self.training)

    def _export_width(self, num_features: int | None) -> int:
        n = self.target_num_features if num_features is None else int(num_features)
        if not 1 <= n <= self.num_features:
            raise ValueError(f"export(num_features={n}) must lie in [1, {self.num_features}]")
        return n

    def export(self, num_features: int | None = None) -> nn.Module:
        """New ``nn.BatchNorm2d`` of ``num_features`` (default ``target_num_features``) with cloned leading slices."""
        n = self._export_width(num_features)
        out = nn.BatchNorm2d(n, self.eps, self.momentum, self.affine, self.track_running_stats,
                             device=self.running_mean.device if self.running_mean is not None else self.weight.device,
                             dtype=self.weight.dtype if self.weight is not None else None)
        return self._export_bn(out, n)

    def fuse(self) -> nn.Module:
        """timm ``reparameterize_model`` hook: returns :meth:`export`."""
        return self.export()

    def reparameterize(self) -> nn.Module:
        """Alias of :meth:`export`."""
        return self.export()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target_num_features={self.target_num_features}, mode={self.mode.value}"


class HybridBatchNormAct2d(HybridBatchNorm2d):
    """Hybrid version of timm's ``BatchNormAct2d`` (BN + drop + activation in one module), docs/algorithms.md §3.

    Same slicing as :class:`HybridBatchNorm2d`; keeps timm's ``drop`` and ``act`` children. Build it from an
    existing timm module with :meth:`from_timm` (keeps copies of its ``act``/``drop``) or directly with timm's
    arguments (``act_layer`` etc., resolved through timm, imported lazily). :meth:`export` returns a timm
    ``BatchNormAct2d`` of target width with copies of ``act``/``drop``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        apply_act: bool = True,
        act_layer: Any = nn.ReLU,
        act_kwargs: Mapping[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: type[nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_num_features: int,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype,
                         target_num_features=target_num_features)
        self.drop: nn.Module = drop_layer() if drop_layer is not None else nn.Identity()
        act: nn.Module | None = None
        if apply_act and act_layer is not None:
            from timm.layers import create_act_layer

            kwargs = dict(act_kwargs or {})
            kwargs.setdefault("inplace", inplace)
            act = create_act_layer(act_layer, **kwargs)
        self.act: nn.Module = nn.Identity() if act is None else act

    @classmethod
    def from_timm(cls, module: nn.Module, num_features: int, target_num_features: int) -> "HybridBatchNormAct2d":
        """Widen a timm ``BatchNormAct2d``: copies of its ``act``/``drop``, its statistics and affine parameters in
        the leading ``module.num_features`` channels (the rest at BN defaults: weight 1, bias 0, mean 0, var 1)."""
        import copy

        if not isinstance(module, nn.BatchNorm2d) or not hasattr(module, "act"):
            raise TypeError(f"from_timm expects a timm BatchNormAct2d, got {type(module).__name__}")
        if num_features < module.num_features:
            raise ValueError(f"num_features={num_features} is narrower than the module ({module.num_features})")
        out = cls(num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                  apply_act=False, device=module.weight.device if module.weight is not None else None,
                  dtype=module.weight.dtype if module.weight is not None else None,
                  target_num_features=target_num_features)
        out.act = copy.deepcopy(module.act)
        out.drop = copy.deepcopy(getattr(module, "drop", nn.Identity()))
        n = module.num_features
        with torch.no_grad():
            if module.weight is not None:
                out.weight[:n].copy_(module.weight)
                out.bias[:n].copy_(module.bias)
            if module.running_mean is not None:
                out.running_mean[:n].copy_(module.running_mean)
                out.running_var[:n].copy_(module.running_var)
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        return out.train(module.training)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - BN (sliced) -> drop -> act, as timm
        return self.act(self.drop(self._batch_norm(x)))

    def export(self, num_features: int | None = None) -> nn.Module:
        """New timm ``BatchNormAct2d`` of ``num_features`` (default target) with cloned slices, ``act``/``drop``."""
        import copy

        from timm.layers import BatchNormAct2d

        n = self._export_width(num_features)
        out = BatchNormAct2d(n, self.eps, self.momentum, self.affine, self.track_running_stats, apply_act=False,
                             device=self.running_mean.device if self.running_mean is not None else self.weight.device,
                             dtype=self.weight.dtype if self.weight is not None else None)
        out.act = copy.deepcopy(self.act)
        out.drop = copy.deepcopy(self.drop)
        return self._export_bn(out, n)
