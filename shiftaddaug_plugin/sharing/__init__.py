"""Heterogeneous weight sharing between multiplicative and adder layers (ShiftAddAug eq. 5, docs/algorithms.md §5)."""
from __future__ import annotations

from .remap import PiecewiseRemap, WeightRemap, gauss_to_laplace, pretrain_remap, remap_modules

__all__ = ["PiecewiseRemap", "WeightRemap", "gauss_to_laplace", "pretrain_remap", "remap_modules"]
