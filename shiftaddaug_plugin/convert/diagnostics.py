"""What the multiplication-free operators read, before and after a channel sort (weight-sharing diagnostics).

For every hybrid conv whose target is multiplication-free now (``op`` shift / adder / shiftadd, ``mf_enabled``):

* ``mean_abs``: mean ``|w|`` of the weight the MF operator reads (adder: ``adder_weight_for_target()``, i.e. after an
  eq. 5 remap if the layer has one; shift: the stored target block before power-of-two rounding);
* ``kurtosis``: excess kurtosis of that weight (Gaussian 0, Laplace 3);
* ``channel_corr``: mean absolute correlation between the layer's output channels on a fixed batch in
  ``Mode.TARGET`` (near 1: the filters compute almost the same function, as adders with too small weights do).

:func:`sort_diagnostics` measures the model as it is, after a sort with the quantile-matching remap and after a sort
without it (on copies), plus the target network's loss on the batch for each: how much a sort disturbs the target and
whether the remap makes the moved weights look like the adder's own.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modes import Mode, set_mode
from .sort import SortScope, sort_channels

__all__ = ["mf_read_stats", "sort_diagnostics"]


def _read_weight(layer: Any) -> Tensor | None:  # a hybrid conv / linear (duck-typed)
    if getattr(layer, "op", "mult") == "mult" or not getattr(layer, "mf_enabled", False) or not hasattr(layer,
                                                                                                         "depthwise"):
        return None
    w = layer.adder_weight_for_target()
    if w is None:  # shift: the stored target block
        w = layer.weight[: layer.target_out_channels] if layer.depthwise else \
            layer.weight[: layer.target_out_channels, : layer.target_in_channels]
    return w.detach().double().flatten()


def _kurtosis(w: Tensor) -> float:
    z = (w - w.mean()) / w.std().clamp_min(1e-12)
    return float((z ** 4).mean() - 3.0)


def _channel_corr(y: Tensor) -> float:
    c = y.shape[1]
    if c < 2:
        return float("nan")
    flat = y.detach().double().transpose(0, 1).reshape(c, -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    norms = flat.norm(dim=1).clamp_min(1e-12)
    corr = (flat @ flat.T) / (norms[:, None] * norms[None, :])
    off = corr[~torch.eye(c, dtype=torch.bool)]
    return float(off.abs().mean())


@torch.no_grad()
def mf_read_stats(model: nn.Module, images: Tensor, targets: Tensor | None = None) -> dict[str, Any]:
    """Per-layer ``mean_abs`` / ``kurtosis`` / ``channel_corr`` (module docstring), their means over layers, and the
    target network's cross-entropy on ``(images, targets)`` (eval mode, ``Mode.TARGET``)."""
    layers = {name: m for name, m in model.named_modules() if _read_weight(m) is not None}
    outputs: dict[str, Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=name: outputs.__setitem__(n, out))
               for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with set_mode(model, Mode.TARGET):
            logits = model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    per_layer: dict[str, dict[str, float]] = {}
    for name, layer in layers.items():
        w = _read_weight(layer)
        assert w is not None
        per_layer[name] = {"op": layer.op, "mean_abs": float(w.abs().mean()), "kurtosis": _kurtosis(w),
                           "channel_corr": _channel_corr(outputs[name]) if name in outputs else float("nan")}
    summary: dict[str, Any] = {"layers": per_layer}
    for key in ("mean_abs", "kurtosis", "channel_corr"):
        vals = [v[key] for v in per_layer.values() if v[key] == v[key]]
        summary[key] = sum(vals) / len(vals) if vals else float("nan")
    if targets is not None:
        summary["target_loss"] = float(F.cross_entropy(logits.float(), targets))
        summary["target_acc"] = float((logits.argmax(-1) == targets).double().mean() * 100)
    return summary


def sort_diagnostics(model: nn.Module, images: Tensor, targets: Tensor | None = None, *,
                     scope: SortScope | str = SortScope.ALL) -> dict[str, Any]:
    """``{'before', 'sorted_remap', 'sorted_no_remap'}`` :func:`mf_read_stats` of ``model`` and of two sorted copies
    (``model`` itself is not changed)."""
    out: dict[str, Any] = {"before": mf_read_stats(model, images, targets)}
    for key, remap in (("sorted_remap", True), ("sorted_no_remap", False)):
        twin = copy.deepcopy(model)
        stats: dict[str, int] = {}
        sort_channels(twin, scope=scope, remap_moved=remap, stats=stats)
        out[key] = {**mf_read_stats(twin, images, targets), **stats}
        del twin
    return out
