"""Pre-training the FC of heterogeneous weight sharing (ShiftAddAug eq. 5, docs/algorithms.md §5).

* :func:`remap_modules` — the hybrid adder layers of a model that carry a :class:`WeightRemap`;
* :func:`pretrain_remap` — how ``FC`` is pre-trained: a few optimiser steps on the task loss of the target network
  with everything except the remap parameters frozen, after which the remaps are frozen for augmented training.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ..layers.hybrid import HybridConv2d
from ..layers.remap import WeightRemap
from ..modes import Mode, set_mode

__all__ = ["pretrain_remap", "remap_modules"]


def remap_modules(model: nn.Module) -> list[nn.Module]:
    """The hybrid adder / shift-add layers of ``model`` that carry a :class:`WeightRemap` (in module order)."""
    return [m for m in model.modules() if isinstance(m, HybridConv2d) and isinstance(m.remap, WeightRemap)]


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"pretrain_remap expects the loader to yield (inputs, targets) pairs, got {type(batch).__name__}; "
        "wrap the loader so that it does"
    )


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader`` again and again; ``ValueError`` if one full pass yields nothing (would loop forever)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("pretrain_remap got an empty loader; pass a loader that yields (inputs, targets)")


def pretrain_remap(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: Callable[[Any, Any], Tensor],
    steps: int,
    lr: float = 1e-3,
) -> list[float]:
    """Pre-train the ``FC`` of every hybrid adder layer's :class:`WeightRemap`, then freeze them (docs/algorithms.md
    §5).

    This is how ``FC`` of eq. 5 is pre-trained: the model runs in ``Mode.TARGET`` with the MF operators enabled
    (``mf_enabled=True`` on the remapped layers for the duration, so the adders really read ``r(FC(W))``) and
    Adam(``lr``) optimises only the remap parameters on ``loss_fn(model(inputs), targets)`` for ``steps`` batches
    (the loader is restarted when exhausted). Every other parameter has ``requires_grad`` off during the run; BN
    layers run on batch statistics (train mode) but all buffers are restored afterwards, so nothing but the remap
    parameters changes. Requires-grad flags, train/eval state, modes and ``mf_enabled`` are restored, and the remaps
    end frozen (``requires_grad=False``, ``frozen=True``). Returns the loss of every step.

    Raises ``ValueError`` if the model has no remapped adder layer or ``steps < 1``, ``FloatingPointError`` on a
    non-finite loss (the model is restored first).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    layers = remap_modules(model)
    if not layers:
        raise ValueError(
            "pretrain_remap found no hybrid adder layer with a WeightRemap; build HybridConv2d(op='adder' or "
            "'shiftadd', remap=True) (or convert with remap enabled) first"
        )
    remaps: list[WeightRemap] = []
    for layer in layers:
        if not any(layer.remap is r for r in remaps):
            remaps.append(layer.remap)
    remap_params = [p for r in remaps for p in r.parameters()]
    if not remap_params:
        raise ValueError("the WeightRemaps have no FC parameters (fc=False); there is nothing to pre-train")

    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    mf_flags = [(layer, layer.mf_enabled) for layer in layers]
    was_training = model.training
    device = remap_params[0].device
    losses: list[float] = []
    try:
        for p, _ in requires_grad:
            p.requires_grad_(False)
        for r in remaps:
            r.unfreeze()
        for layer in layers:
            layer.mf_enabled = True
        optimizer = torch.optim.Adam(remap_params, lr=lr)
        model.train()
        with set_mode(model, Mode.TARGET):
            for _, batch in zip(range(steps), _cycle(loader)):
                inputs, targets = _split_batch(batch)
                inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                loss = loss_fn(model(inputs), targets)
                if not torch.isfinite(loss.detach()).all():
                    raise FloatingPointError(f"pretrain_remap: non-finite loss {loss.item()} at step {len(losses)}; "
                                             "lower lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        for layer, flag in mf_flags:
            layer.mf_enabled = flag
        model.train(was_training)
        for r in remaps:
            r.freeze()
    return losses
