"""The joint-loss step of ShiftAddAug (paper §3.2; NetAug's augmented loss; docs/algorithms.md §4).

One training step computes the target network's loss ``L_t`` (``Mode.TARGET``: the multiplication-free network that is
exported), then the loss ``L_a`` of one augmented network sampled around it (``Mode.AUGMENTED``: target channels plus
multiplicative extra channels, eq. 4), and optimises ``L_t + alpha * L_a`` with one backward. How a loss is computed
(a timm criterion, an mmseg loss dict) is the caller's; the order of the passes, the sampling and the modes are here.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ..modes import Mode, set_mode
from .sampler import WidthSampler

__all__ = ["joint_loss"]

L = TypeVar("L")


def joint_loss(model: nn.Module, step: int, target_loss: Callable[[], L], aug_loss: Callable[[], L], *,
               sampler: WidthSampler, augment: bool = True, width_aug: bool = True) -> tuple[L, L | None]:
    """``(L_t, L_a)`` of one step: ``target_loss()`` in target mode, then (if ``augment``) the widths of ``step``
    sampled on ``model`` (width augmentation only if ``width_aug``; expand augmentation always) and ``aug_loss()`` in
    augmented mode. ``L_a`` is ``None`` without augmentation. The model is left in target mode."""
    set_mode(model, Mode.TARGET)
    loss_t = target_loss()
    loss_a = None
    if augment:
        sampler.sample(model, step, width=width_aug, expand=True)
        set_mode(model, Mode.AUGMENTED)
        try:
            loss_a = aug_loss()
        finally:
            set_mode(model, Mode.TARGET)
    return loss_t, loss_a
