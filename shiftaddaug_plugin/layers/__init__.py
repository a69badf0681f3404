"""Layers: thin ``nn.Conv2d`` / ``nn.Linear`` subclasses keeping ``weight`` and ``bias``.

* multiplication-free: ``ShiftConv2d``, ``ShiftLinear`` (DeepShift-Q), ``AdderConv2d`` (AdderNet),
  ``ShiftAddConv2d`` (ShiftAddNet's shift-then-add composite);
* hybrid (ShiftAddAug eq. 4): ``HybridConv2d``, ``HybridLinear``, ``HybridBatchNorm2d``, ``HybridBatchNormAct2d``.
"""
from .adder import AdderConv2d
from .hybrid import HybridBatchNorm2d, HybridBatchNormAct2d, HybridConv2d, HybridLinear
from .shift import ShiftConv2d, ShiftLinear
from .shiftadd import ShiftAddConv2d

__all__ = [
    "AdderConv2d",
    "HybridBatchNorm2d",
    "HybridBatchNormAct2d",
    "HybridConv2d",
    "HybridLinear",
    "ShiftAddConv2d",
    "ShiftConv2d",
    "ShiftLinear",
]
