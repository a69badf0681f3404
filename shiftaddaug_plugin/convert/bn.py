"""BatchNorm recalibration of the target network (docs/algorithms.md §4: before every evaluation and before export).

After augmented training the running statistics of the target slice were accumulated over a mix of sub-networks;
:func:`recalibrate_bn` re-estimates them on the target network alone: ``Mode.TARGET``, every batch norm in
batch-statistics mode with ``momentum=None`` (cumulative average over the batches), the rest of the model in eval
mode (no dropout / drop-path), no gradients. The statistics of augmented slices are kept as they were. Train/eval
flags, momenta and modes are restored afterwards.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..modes import Mode, set_mode
from ..protocol import unwrap
from .plan import PLAN_ATTR, ConversionPlan

__all__ = ["recalibrate_bn"]


def _images(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("inputs", "input", "image", "images", "img"):
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise TypeError(f"recalibrate_bn cannot find the images in a batch of type {type(batch).__name__}; yield tensors, "
                    "(images, targets) tuples or dicts with an 'inputs'/'image' tensor, or pass forward_fn=")


def recalibrate_bn(
    model: nn.Module,
    loader: Iterable[Any],
    num_images: int,
    device: torch.device | str | None = None,
    *,
    forward_fn: Callable[[nn.Module, Tensor], Any] | None = None,
) -> int:
    """Re-estimate target-network BN statistics from ``num_images`` training images (docs/algorithms.md §4).

    Args:
        model: converted (or plain) model; its batch norms' running statistics are overwritten.
        loader: iterable of batches (tensor, ``(images, ...)`` or dict with ``'inputs'``); the last batch is cut so
            that exactly ``num_images`` images are used (if the loader has that many).
        num_images: positive number of images.
        device: move images there first (default: leave them).
        forward_fn: ``forward_fn(model, images)`` (default ``model(images)``).

    Returns the number of images used. ``ValueError`` if the model has no batch norm tracking statistics or the
    loader yields nothing.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("the model has no batch norm that tracks running statistics; nothing to recalibrate")
    root = model if getattr(model, PLAN_ATTR, None) is not None else unwrap(model)
    plan = getattr(root, PLAN_ATTR, None)
    target_width: dict[nn.Module, int] = {}
    if isinstance(plan, ConversionPlan):
        for name, layer in plan.layers.items():
            if layer.kind == "bn":
                target_width[root.get_submodule(name)] = layer.target_in
    forward = forward_fn or (lambda m, x: m(x))
    flags = {m: m.training for m in model.modules()}
    saved = {bn: (bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in bns}
    seen = 0
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad(), set_mode(model, Mode.TARGET):
            for batch in loader:
                x = _images(batch)
                x = x[: num_images - seen]
                if device is not None:
                    x = x.to(device, non_blocking=True)
                forward(model, x)
                seen += int(x.shape[0])
                if seen >= num_images:
                    break
        if seen == 0:
            raise ValueError("the loader yielded no images; pass a non-empty training loader")
        for bn, n in target_width.items():  # augmented slices keep their statistics
            _, mean, var, _ = saved[bn]
            bn.running_mean[n:] = mean[n:]
            bn.running_var[n:] = var[n:]
    except BaseException:
        for bn, (_, mean, var, count) in saved.items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
        raise
    finally:
        for bn, (momentum, *_) in saved.items():
            bn.momentum = momentum
        for m, flag in flags.items():
            m.training = flag
    return seen
