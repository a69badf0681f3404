"""Registration of our operators in mmengine's *root* ``MODELS`` registry (docs/ARCHITECTURE.md).

mmcv's ``build_conv_layer`` looks conv types up in the root registry, so after registration
``conv_cfg=dict(type='ShiftConv2d')`` works in any mmseg module. Nothing here runs at ``import shiftaddaug_plugin``
unless mmengine is already imported; ``shiftaddaug_plugin.mmseg_ext`` calls it explicitly.
"""
from __future__ import annotations

#: registry name -> (module path, class name). Names are unique: mmcv owns 'Conv', 'Conv2d', 'Linear', ...
MMENGINE_OPS: dict[str, tuple[str, str]] = {
    "ShiftConv2d": ("shiftaddaug_plugin.layers.shift", "ShiftConv2d"),
    "ShiftLinear": ("shiftaddaug_plugin.layers.shift", "ShiftLinear"),
    "AdderConv2d": ("shiftaddaug_plugin.layers.adder", "AdderConv2d"),
    "ShiftAddConv2d": ("shiftaddaug_plugin.layers.shiftadd", "ShiftAddConv2d"),
}


def register_mmengine_modules() -> None:
    """Register every operator of ``MMENGINE_OPS`` in ``mmengine.registry.MODELS`` (idempotent)."""
    import importlib

    try:
        from mmengine.registry import MODELS
    except ImportError as err:  # pragma: no cover - exercised only without the [mmseg] extra
        raise ImportError(
            "mmengine is not installed; install the MMSegmentation extra: pip install 'shiftaddaug_plugin[mmseg]'"
        ) from err
    for name, (module_path, cls_name) in MMENGINE_OPS.items():
        cls = getattr(importlib.import_module(module_path), cls_name)
        existing = MODELS.module_dict.get(name)
        if existing is cls:
            continue
        if existing is not None:
            raise RuntimeError(
                f"mmengine MODELS already has a different {name!r} ({existing.__module__}); "
                "another plugin uses the same name"
            )
        MODELS.register_module(name=name, module=cls)
