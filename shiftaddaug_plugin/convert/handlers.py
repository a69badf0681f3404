"""The leaf rewrite table: exact module type -> hybrid builder (docs/algorithms.md §3, §6 Brevitas anchor).

Analysis (:mod:`.plan`) asks :func:`layer_kind` which leaves it may convert; the converter asks
:func:`handler_for` how. Lookup is by **exact type**: a subclass of ``nn.Conv2d`` / ``nn.Linear`` / a batch norm
(timm ``Conv2dSame``, ``StdConv2d``, mmcv ``Conv2dAdaptivePadding``, our own MF layers, ...) may compute something
else than its base class, so it is rejected with a ``ValueError`` naming the module and the ``filter_fn`` fix
instead of being converted silently.

Initialisation of a widened layer: the whole max-width tensor is initialised like a freshly built dense layer
(conv: Kaiming normal, fan-out, ReLU gain, as timm/torchvision MobileNets; linear: ``nn.Linear``'s default), then
the pretrained dense tensor is copied into the leading (target) slice. Adder-only weights (the target block of
``'adder'`` layers, ``adder_weight`` of ``'shiftadd'`` layers) are then redrawn from ``N(0, adder_init_std**2)``
(AdderNet's initialisation, ``ConvertConfig.adder_init_std``) unless that is ``None``. Augmented BN slices:
weight 1, bias 0, running mean 0, running var 1.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.hybrid import (
    HybridBatchNorm2d,
    HybridBatchNormAct2d,
    HybridConv2d,
    HybridLinear,
)

if TYPE_CHECKING:  # pragma: no cover
    from .plan import ConversionPlan, LayerPlan

__all__ = ["Handler", "handler_table", "handler_for", "layer_kind", "GUARDED_BASES", "UNSUPPORTED_MULT_TYPES"]


@dataclass(frozen=True)
class Handler:
    """How one exact module type is analysed (``kind``) and rewritten (``build``)."""

    kind: str  #: 'conv' | 'linear' | 'bn'
    build: Callable[[nn.Module, "LayerPlan", "ConversionPlan"], nn.Module]


def _factory(t: torch.Tensor) -> dict:
    return dict(device=t.device, dtype=t.dtype)


def _copy_grad_flags(old: nn.Module, new: nn.Module, names: tuple[str, ...]) -> None:
    for n in names:
        p_old, p_new = getattr(old, n, None), getattr(new, n, None)
        if isinstance(p_old, nn.Parameter) and isinstance(p_new, nn.Parameter):
            p_new.requires_grad_(p_old.requires_grad)


def _build_conv(old: nn.Module, layer: "LayerPlan", plan: "ConversionPlan") -> nn.Module:

    assert isinstance(old, nn.Conv2d)
    cfg = plan.config
    depthwise = layer.kind == "dwconv"
    max_in, max_out = layer.max_in, layer.max_out
    new = HybridConv2d(
        max_in, max_out, old.kernel_size, old.stride, old.padding, old.dilation,
        groups=max_out if depthwise else 1, bias=old.bias is not None, padding_mode=old.padding_mode,
        **_factory(old.weight),
        target_in_channels=layer.target_in, target_out_channels=layer.target_out,
        op=layer.op, op_kwargs=cfg.kwargs_for(layer.op), remap=cfg.remap_for(layer.op),
    )
    kh, kw = new.kernel_size
    fan_out = (max_out // new.groups) * kh * kw
    with torch.no_grad():
        new.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        if depthwise:
            new.weight[: layer.target_out].copy_(old.weight)
        else:
            new.weight[: layer.target_out, : layer.target_in].copy_(old.weight)
        if old.bias is not None:
            new.bias.zero_()
            new.bias[: layer.target_out].copy_(old.bias)
        if cfg.adder_init_std is not None:
            _addernet_init(new, layer, cfg.adder_init_std)
    _copy_grad_flags(old, new, ("weight", "bias"))
    return new.train(old.training)


def _addernet_init(new: nn.Module, layer: "LayerPlan", std: float) -> None:
    """Redraw the weights only the adder reads from ``N(0, std**2)`` (AdderNet's initialisation).

    In eq. 4 the target block ``W[:O_t, :I_t]`` (depthwise: ``W[:C_t]``) feeds only the target operator; the
    multiplicative parts read ``W[:O_t, I_t:]`` and ``W[O_t:, :]``, so redrawing it leaves them untouched.
    """
    if layer.op == "adder":
        if layer.kind == "dwconv":
            new.weight[: layer.target_out].normal_(0.0, std)
        else:
            new.weight[: layer.target_out, : layer.target_in].normal_(0.0, std)
    elif layer.op == "shiftadd" and getattr(new, "adder_weight", None) is not None:
        new.adder_weight.normal_(0.0, std)


def _build_linear(old: nn.Module, layer: "LayerPlan", plan: "ConversionPlan") -> nn.Module:

    assert isinstance(old, nn.Linear)
    new = HybridLinear(layer.max_in, old.out_features, old.bias is not None, **_factory(old.weight),
                       target_in_features=layer.target_in, op=layer.op,
                       op_kwargs=plan.config.kwargs_for(layer.op))
    with torch.no_grad():  # augmented inputs keep nn.Linear's default init
        new.weight[:, : layer.target_in].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    _copy_grad_flags(old, new, ("weight", "bias"))
    return new.train(old.training)


def _copy_bn_state(old: _BatchNorm, new: _BatchNorm, n: int) -> None:
    with torch.no_grad():
        if old.weight is not None:
            new.weight[:n].copy_(old.weight)
            new.bias[:n].copy_(old.bias)
        if old.running_mean is not None:
            new.running_mean[:n].copy_(old.running_mean)
            new.running_var[:n].copy_(old.running_var)
            new.num_batches_tracked.copy_(old.num_batches_tracked)


def _bn_factory(old: _BatchNorm) -> dict:
    ref = old.weight if old.weight is not None else old.running_mean
    return _factory(ref) if ref is not None else {}


def _build_bn(old: nn.Module, layer: "LayerPlan", plan: "ConversionPlan") -> nn.Module:

    assert isinstance(old, _BatchNorm)
    new = HybridBatchNorm2d(layer.max_in, old.eps, old.momentum, old.affine, old.track_running_stats,
                            **_bn_factory(old), target_num_features=layer.target_in)
    _copy_bn_state(old, new, layer.target_in)
    _copy_grad_flags(old, new, ("weight", "bias"))
    return new.train(old.training)


def _build_bn_act(old: nn.Module, layer: "LayerPlan", plan: "ConversionPlan") -> nn.Module:

    new = HybridBatchNormAct2d.from_timm(old, num_features=layer.max_in, target_num_features=layer.target_in)
    _copy_grad_flags(old, new, ("weight", "bias"))
    return new


def handler_table() -> dict[type, Handler]:
    """Exact type -> :class:`Handler`. timm's ``BatchNormAct2d`` and ``Linear`` and mmcv's ``Conv2d``/``Linear``
    wrappers are looked up lazily (only if timm / mmcv is loaded, which it is whenever a model contains one).
    ``nn.SyncBatchNorm`` becomes a (non-synchronised) ``HybridBatchNorm2d``: statistics are then per process."""
    table: dict[type, Handler] = {
        nn.Conv2d: Handler("conv", _build_conv),
        nn.Linear: Handler("linear", _build_linear),
        nn.BatchNorm2d: Handler("bn", _build_bn),
        nn.SyncBatchNorm: Handler("bn", _build_bn),
    }
    if "timm" in sys.modules:
        try:
            from timm.layers import BatchNormAct2d
            from timm.layers.linear import Linear as TimmLinear
        except ImportError:  # pragma: no cover - very old timm
            pass
        else:
            table[BatchNormAct2d] = Handler("bn", _build_bn_act)
            table[TimmLinear] = Handler("linear", _build_linear)  # nn.Linear + a TorchScript dtype cast
    if "mmcv" in sys.modules:
        try:  # mmcv's empty-tensor wrappers: nn.Conv2d / nn.Linear maths for non-empty inputs
            from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
            from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
        except ImportError:  # pragma: no cover - mmcv without these wrappers
            pass
        else:
            table[MMCVConv2d] = Handler("conv", _build_conv)
            table[MMCVLinear] = Handler("linear", _build_linear)
    return table


GUARDED_BASES: tuple[type, ...] = (nn.Conv2d, nn.Linear, _BatchNorm)

#: multiplying layers the converter has no MF counterpart for (Conv1d/Conv3d/transposed convs, attention): refused
#: with the ``filter_fn`` fix, never left multiplicative without the user saying so
UNSUPPORTED_MULT_TYPES: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.MultiheadAttention)


def layer_kind(name: str, module: nn.Module, table: dict[type, Handler]) -> str | None:
    """``'conv'``/``'linear'``/``'bn'`` for a convertible leaf, ``None`` for a module the converter leaves alone.

    Raises ``ValueError`` for subclasses of ``nn.Conv2d``/``nn.Linear``/batch norms that are not in the table
    (their maths may differ from the base class: padding, weight standardisation, ...) and for multiplying layers
    without an MF counterpart (:data:`UNSUPPORTED_MULT_TYPES`), naming the ``filter_fn`` fix."""
    handler = table.get(type(module))
    if handler is not None:
        return handler.kind
    if isinstance(module, GUARDED_BASES):
        base = next(b for b in GUARDED_BASES if isinstance(module, b))
        cls = type(module)
        raise ValueError(
            f"cannot convert module '{name}' of type {cls.__module__}.{cls.__qualname__}: it subclasses "
            f"{base.__module__}.{base.__qualname__} but is not one of the exactly supported types "
            f"({', '.join(t.__qualname__ for t in table)}), so its maths may differ. Exclude it with "
            f"convert(..., filter_fn=lambda module, name: name != '{name}') (its channels then keep their target "
            f"width) or replace it by a plain {base.__qualname__} first"
        )
    if isinstance(module, UNSUPPORTED_MULT_TYPES):
        cls = type(module)
        raise ValueError(
            f"cannot convert module '{name}' of type {cls.__module__}.{cls.__qualname__}: the converter has "
            f"multiplication-free counterparts for {', '.join(t.__qualname__ for t in table)} only. Keep it "
            f"multiplicative with convert(..., filter_fn=lambda module, name: not name.startswith('{name}')) "
            "(the conversion audit and the cost model then list it as multiplicative) or replace it first"
        )
    return None


def handler_for(module: nn.Module, table: dict[type, Handler]) -> Handler:
    """The handler of ``module``'s exact type (``KeyError`` is a programming error: analysis already checked)."""
    return table[type(module)]
