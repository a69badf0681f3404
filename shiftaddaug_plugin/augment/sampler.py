"""The width sampler of the augmented pass (docs/algorithms.md §4; NetAug's random augmented sub-network).

The widths of step ``i`` are drawn from ``random.Random(f"shiftaddaug:{seed}:{i}")`` (string seeds hash with SHA-512,
independent of the process and of ``PYTHONHASHSEED``): a pure function of ``(seed, i)``. All DDP ranks therefore
run the same augmented sub-network, and a resumed run samples exactly what the uninterrupted one would have, with
no sampler state in the checkpoint.
"""
from __future__ import annotations

import random

from torch import nn

from ..convert import sample_active_widths

__all__ = ["WidthSampler"]


class WidthSampler:
    """Samples and applies one augmented width configuration per training step."""

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"WidthSampler seed must be an int, got {seed!r}")
        self.seed = seed

    def rng(self, step: int) -> random.Random:
        """The generator of step ``step``."""
        return random.Random(f"shiftaddaug:{self.seed}:{int(step)}")

    def sample(self, model: nn.Module, step: int, *, width: bool = True, expand: bool = True) -> dict[int, int]:
        """Draw step ``step``'s widths and set them on ``model``; returns ``{group id: width}``."""
        return sample_active_widths(model, self.rng(step), width=width, expand=expand)
