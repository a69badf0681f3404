"""Divergence guard shared by the timm trainer and the MMSegmentation optimizer wrapper: a non-finite loss skips
its optimizer step, more than ``max_nonfinite`` of them stop training before the bad update, and weights that
overflowed while the loss stayed finite are never checkpointed (README "What happens when things go wrong")."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

__all__ = ["NonFiniteLossError", "NonFiniteGuard", "nonfinite_entries"]


class NonFiniteLossError(RuntimeError):
    """The training loss (or the weights) became NaN or infinite; training stops before the optimizer step that
    would use it, so the model and the last checkpoint stay intact."""


class NonFiniteGuard:
    """Counts the optimizer steps skipped for a non-finite loss over a whole run.

    ``check(finite)`` returns ``True`` when the step may go ahead, ``False`` when it is to be skipped (the
    ``count``-th non-finite step, ``count <= max_nonfinite``), and raises :class:`NonFiniteLossError` with
    ``stop_message(count)`` once ``count > max_nonfinite``. In data-parallel training ``finite`` must already
    agree on every rank (all-reduced), so all ranks skip or stop together.
    """

    def __init__(self, max_nonfinite: int) -> None:
        if isinstance(max_nonfinite, bool) or not isinstance(max_nonfinite, int) or max_nonfinite < 0:
            raise ValueError(f"max_nonfinite_steps={max_nonfinite!r} must be an int >= 0 (non-finite optimizer "
                             "steps to skip before training stops; 0 stops at the first)")
        self.max_nonfinite = max_nonfinite
        self.count = 0

    def check(self, finite: bool, stop_message: str) -> bool:
        """``True``: step; ``False``: skip this step; raises once more than ``max_nonfinite`` were skipped."""
        if finite:
            return True
        self.count += 1
        if self.count <= self.max_nonfinite:
            return False
        raise NonFiniteLossError(stop_message)


def nonfinite_entries(state: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [name for name, value in state.items()
            if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
