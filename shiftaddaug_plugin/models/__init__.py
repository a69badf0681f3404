"""timm model registrations (docs/algorithms.md §9, docs/ARCHITECTURE.md): importing this package registers
``shiftadd_mcunet``,
``shiftadd_mbv2_tiny`` and ``shiftadd_proxyless`` in timm's model registry. ``shiftadd_custom`` (a NAS-found
architecture) lives with the search space in :mod:`shiftaddaug_plugin.nas.custom_model` (no optuna import);
:func:`shiftaddaug_plugin.register_timm_models` registers all four.

Importing it imports timm; ``import shiftaddaug_plugin`` does so only when timm is already loaded (stock
``train.py --device-modules shiftaddaug_plugin``).
"""
from __future__ import annotations

from .shiftadd_nets import (
    REFERENCE_ARCHS,
    ModelVariant,
    ReferenceArch,
    StageSpec,
    apply_variant,
    arch_block_strings,
    parse_variant_kwargs,
    shiftadd_mbv2_tiny,
    shiftadd_mcunet,
    shiftadd_proxyless,
)

__all__ = [
    "REFERENCE_ARCHS",
    "ModelVariant",
    "ReferenceArch",
    "StageSpec",
    "apply_variant",
    "arch_block_strings",
    "parse_variant_kwargs",
    "shiftadd_mbv2_tiny",
    "shiftadd_mcunet",
    "shiftadd_proxyless",
]
