"""The augmentation schedule's step arithmetic, shared by the timm trainer and the mmseg hook.

A schedule setting given as a fraction of training (width augmentation stops at ``fraction``, block-variant training
ends at ``fraction``) becomes a step (epoch or iteration) by rounding half up: ``floor(fraction * total + 0.5)``.
Half up, not Python's ``round`` (half to even): 0.5 x 5 epochs stops after epoch 3 (index 3), 0.5 x 7 after 4.
"""
from __future__ import annotations

import math

__all__ = ["fraction_to_step"]


def fraction_to_step(fraction: float, total: int) -> int:
    """``floor(fraction * total + 0.5)``: the first step (0-based) at or after ``fraction`` of ``total`` steps."""
    if not (isinstance(total, int) and total >= 0):
        raise ValueError(f"total={total!r} must be an integer >= 0")
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must lie in [0, 1]")
    return int(math.floor(fraction * total + 0.5))
