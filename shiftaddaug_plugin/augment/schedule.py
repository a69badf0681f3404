"""The augmentation schedule (docs/algorithms.md §4-§6), computed once and read by the timm trainer and the mmseg hook.

A step is an epoch (timm trainer) or an iteration (mmseg hook); ``total`` is the number of steps. A setting given as a
fraction of training becomes a step by rounding half up, ``floor(fraction * total + 0.5)`` (not Python's ``round``,
half to even: 0.5 x 5 epochs stops after epoch 3, 0.5 x 7 after 4). At step ``s`` (0-based):

* width augmentation (NetAug's wider block outputs) is on while ``s < width_end``, ``width_end =
  fraction_to_step(width_aug_stop, total)``; expand augmentation stays on for the whole run;
* channels are sorted into the target (paper §3.3, "at the end of each training cycle") at ``s > 0`` with ``s %
  sort_interval == 0`` while width augmentation is on, i.e. after a cycle, never on the untrained weights;
* block-variant training (§6) turns the target multiplication-free shallow to deep with progress ``min(1, s /
  bv_end)``, ``bv_end = max(1, fraction_to_step(block_variant_end, total))``.

Light module: no torch import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AugSchedule", "StepPlan", "fraction_to_step"]


def fraction_to_step(fraction: float, total: int) -> int:
    """``floor(fraction * total + 0.5)``: the first step (0-based) at or after ``fraction`` of ``total`` steps."""
    if not (isinstance(total, int) and total >= 0):
        raise ValueError(f"total={total!r} must be an integer >= 0")
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must lie in [0, 1]")
    return int(math.floor(fraction * total + 0.5))


@dataclass(frozen=True)
class StepPlan:
    """What the schedule decides for one step."""

    step: int
    width_aug: bool  #: sample wider block outputs in the augmented pass
    sort: bool  #: sort mid channels into the target before this step
    block_variant_progress: float | None  #: fraction of MF units (``None``: no block-variant training, all MF)


@dataclass(frozen=True)
class AugSchedule:
    """ShiftAddAug's schedule over ``total`` steps (module docstring).

    Args:
        total: number of steps (epochs or iterations), >= 1.
        augment: ``False`` for direct training of the target (no augmented pass: no width augmentation, no sort).
        width_aug_stop: fraction of training after which width augmentation stops (NetAug: 0.5).
        sort_interval: sort every this many steps while width augmentation is on; ``None`` or 0: never.
        block_variant_end: fraction of training at which the whole target is MF; ``None``: MF from the start.
    """

    total: int
    augment: bool = True
    width_aug_stop: float = 0.5
    sort_interval: int | None = 1
    block_variant_end: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.total, bool) or not isinstance(self.total, int) or self.total < 1:
            raise ValueError(f"AugSchedule.total={self.total!r} must be an int >= 1 (epochs or iterations)")
        fraction_to_step(self.width_aug_stop, self.total)  # validates the fraction
        if self.block_variant_end is not None:
            fraction_to_step(self.block_variant_end, self.total)
        if self.sort_interval is not None and (isinstance(self.sort_interval, bool)
                                               or not isinstance(self.sort_interval, int) or self.sort_interval < 0):
            raise ValueError(f"AugSchedule.sort_interval={self.sort_interval!r} must be an int >= 0 or None")

    @property
    def width_end(self) -> int:
        """First step without width augmentation."""
        return fraction_to_step(self.width_aug_stop, self.total) if self.augment else 0

    @property
    def block_variant_end_step(self) -> int | None:
        """Step from which the whole target is MF (``None`` without block-variant training)."""
        if self.block_variant_end is None:
            return None
        return max(1, fraction_to_step(self.block_variant_end, self.total))

    def width_aug(self, step: int) -> bool:
        return step < self.width_end

    def sort(self, step: int) -> bool:
        interval = self.sort_interval or 0
        return interval > 0 and self.width_aug(step) and step > 0 and step % interval == 0

    def block_variant_progress(self, step: int) -> float | None:
        end = self.block_variant_end_step
        return None if end is None else min(1.0, max(0.0, step / end))

    def at(self, step: int) -> StepPlan:
        """The decisions of ``step``."""
        return StepPlan(step, self.width_aug(step), self.sort(step), self.block_variant_progress(step))
