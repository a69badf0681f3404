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
from .ops import Op  # noqa: E402  (light: no torch)

#: subpackages loaded on first attribute access (``shiftaddaug_plugin.convert`` is always the subpackage)
_SUBPACKAGES = frozenset({"layers", "functional", "convert", "cost", "models", "sharing", "train", "nas",
                          "mmseg_ext", "data"})
#: names re-exported lazily from a subpackage
_LAZY = {
    "ShiftConv2d": "shiftaddaug_plugin.layers",
    "ShiftLinear": "shiftaddaug_plugin.layers",
    "AdderConv2d": "shiftaddaug_plugin.layers",
    "ShiftAddConv2d": "shiftaddaug_plugin.layers",
    "HybridConv2d": "shiftaddaug_plugin.layers",
    "HybridLinear": "shiftaddaug_plugin.layers",
    "HybridBatchNorm2d": "shiftaddaug_plugin.layers",
    "ConvertConfig": "shiftaddaug_plugin.convert",
    "export": "shiftaddaug_plugin.convert",
    "count_ops": "shiftaddaug_plugin.cost",
}

__all__ = ["Mode", "Op", "set_mode", "register_timm_models", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"shiftaddaug_plugin.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shiftaddaug_plugin' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def register_timm_models() -> None:
    """Register every timm entry point of the plugin (``shiftadd_mcunet``, ``shiftadd_mbv2_tiny``,
    ``shiftadd_proxyless``, ``shiftadd_custom``) in timm's registry. Imports timm; idempotent."""
    importlib.import_module("shiftaddaug_plugin.models")
    importlib.import_module("shiftaddaug_plugin.nas.custom_model")


def _register_if_loaded() -> None:
    """timm has no plugin discovery: ``train.py --device-modules shiftaddaug_plugin`` imports us *after* timm,
    so when timm is already loaded we register our models right away (cheap then); otherwise
    :func:`register_timm_models` (or ``import shiftaddaug_plugin.models``) does it explicitly. Likewise the
    mmengine registries when mmengine is loaded."""
    if "timm" in sys.modules:
        register_timm_models()
    if "mmengine.registry" in sys.modules:
        importlib.import_module("shiftaddaug_plugin.registry").register_mmengine_modules()


_register_if_loaded()
