"""ShiftAddAug for timm and MMSegmentation (Guo et al., arXiv 2407.02881).

Importing this package is cheap: it does not import timm, mmengine or mmseg, compiles nothing and does not
initialise CUDA. Heavy pieces load on first attribute access (see ``_LAZY``).

* ``shiftaddaug_plugin.layers``      multiplication-free and hybrid layers
* ``shiftaddaug_plugin.functional``  the maths behind them (shift quantisation, adder kernels)
* ``shiftaddaug_plugin.convert``     dense model -> hybrid training model -> exported MF target
* ``shiftaddaug_plugin.cost``        multiplication / shift / addition counts and energy
* ``shiftaddaug_plugin.models``      timm model registrations (``shiftadd_mcunet`` ...)
* ``shiftaddaug_plugin.mmseg_ext``   MMSegmentation segmentor, hook, datasets
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

from .modes import Mode, set_mode  # noqa: E402  (light: torch.nn only)

_LAZY = {
    "ShiftConv2d": "shiftaddaug_plugin.layers",
    "ShiftLinear": "shiftaddaug_plugin.layers",
    "AdderConv2d": "shiftaddaug_plugin.layers",
    "ShiftAddConv2d": "shiftaddaug_plugin.layers",
    "HybridConv2d": "shiftaddaug_plugin.layers",
    "HybridLinear": "shiftaddaug_plugin.layers",
    "HybridBatchNorm2d": "shiftaddaug_plugin.layers",
    "convert": "shiftaddaug_plugin.convert",
    "export": "shiftaddaug_plugin.convert",
    "count_ops": "shiftaddaug_plugin.cost",
}

__all__ = ["Mode", "set_mode", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shiftaddaug_plugin' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _register_timm_models_if_timm_loaded() -> None:
    """timm has no plugin discovery: ``train.py --device-modules shiftaddaug_plugin`` imports us *after* timm,
    so when timm is already loaded we register our models right away (cheap then). Without timm loaded
    ``import shiftaddaug_plugin.models`` registers them explicitly."""
    if "timm" in sys.modules:
        importlib.import_module("shiftaddaug_plugin.models")
    if "mmengine.registry" in sys.modules:
        importlib.import_module("shiftaddaug_plugin.registry").register_mmengine_modules()


_register_timm_models_if_timm_loaded()
