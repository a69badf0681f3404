"""timm model registrations (docs/algorithms.md §9, docs/ARCHITECTURE.md): importing this package registers ``shiftadd_mcunet``,
``shiftadd_mbv2_tiny``, ``shiftadd_proxyless`` and ``shiftadd_custom`` (a NAS-found architecture,
:mod:`shiftaddaug_plugin.nas.custom_model`; no optuna import) in timm's model registry.

Importing it imports timm; ``import shiftaddaug_plugin`` does so only when timm is already loaded (stock
``train.py --device-modules shiftaddaug_plugin``).
"""
from __future__ import annotations

from .shiftadd_nets import (
    REFERENCE_ARCHS,
    VALID_OPS,
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
from ..nas.custom_model import shiftadd_custom  # noqa: E402 - after .shiftadd_nets, which it uses

__all__ = [
    "REFERENCE_ARCHS",
    "VALID_OPS",
    "ModelVariant",
    "ReferenceArch",
    "StageSpec",
    "apply_variant",
    "arch_block_strings",
    "parse_variant_kwargs",
    "shiftadd_custom",
    "shiftadd_mbv2_tiny",
    "shiftadd_mcunet",
    "shiftadd_proxyless",
]
