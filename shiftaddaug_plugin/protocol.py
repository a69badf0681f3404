"""What a hybrid module is, and how to reach the model inside a wrapper: one answer each.

* :class:`HybridModule` — any layer with a ``mode`` of type :class:`~shiftaddaug_plugin.modes.Mode` (the hybrid conv,
  linear and batch-norm layers): :func:`set_mode` switches it between target and augmented network.
* :class:`SwitchableModule` — a hybrid layer whose target part can be multiplicative or multiplication-free
  (``mf_enabled``, an ``op`` other than ``'mult'``): what block-variant training turns MF unit by unit (§6).
* :func:`unwrap` — the module inside DDP / mmengine model wrappers (``.module``), timm's EMA (``.module``) and
  ``torch.compile`` (``._orig_mod``).

Light module: ``torch.nn`` only.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable

from torch import nn

from .modes import Mode, is_hybrid
from .ops import OP_TABLE, Op

__all__ = ["HybridModule", "SwitchableModule", "is_hybrid", "is_hybrid_layer", "is_switchable", "hybrid_modules",
           "unwrap"]


@runtime_checkable
class HybridModule(Protocol):
    """A layer that computes either the target or the augmented network (ShiftAddAug eq. 4)."""

    mode: Mode


@runtime_checkable
class SwitchableModule(Protocol):
    """A hybrid layer whose target part can run multiplicatively (``mf_enabled=False``) or multiplication-free."""

    mode: Mode
    op: Op
    mf_enabled: bool


def is_hybrid_layer(module: nn.Module) -> bool:
    """``True`` for a hybrid layer that holds converted weights (hybrid conv / linear / batch norm), as opposed to a
    hybrid container such as a depth-augmentation block that only follows the mode."""
    return is_hybrid(module) and isinstance(module, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))


def is_switchable(module: nn.Module) -> bool:
    """``True`` for a hybrid layer with an MF switch and a multiplication-free operator."""
    if not is_hybrid(module) or not isinstance(getattr(module, "mf_enabled", None), bool):
        return False
    op = getattr(module, "op", None)
    return isinstance(op, Op) and OP_TABLE[op].multiplication_free


def hybrid_modules(model: nn.Module) -> Iterator[tuple[str, Any]]:
    """``(name, module)`` of every hybrid layer of ``model`` in module order."""
    for name, module in model.named_modules():
        if is_hybrid(module):
            yield name, module


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside any stack of DDP / mmengine wrappers, timm EMA copies (``.module``) and
    ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
