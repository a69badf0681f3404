"""Heterogeneous weight sharing between multiplicative and adder layers (ShiftAddAug eq. 5, docs/algorithms.md §5).

The remap modules live with the layers that use them (:mod:`shiftaddaug_plugin.layers.remap`), the maths in
:mod:`shiftaddaug_plugin.functional.distribution`; this package adds the FC pre-training and re-exports both.
"""
from __future__ import annotations

from ..functional.distribution import gauss_to_laplace
from ..layers.remap import PiecewiseRemap, WeightRemap
from .pretrain import pretrain_remap, remap_modules

__all__ = ["PiecewiseRemap", "WeightRemap", "gauss_to_laplace", "pretrain_remap", "remap_modules"]
