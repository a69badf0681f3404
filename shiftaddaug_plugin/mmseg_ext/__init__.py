"""MMSegmentation integration of ShiftAddAug (docs/algorithms.md §4-§6, docs/ARCHITECTURE.md).

Importing this package (what ``custom_imports = dict(imports=['shiftaddaug_plugin.mmseg_ext'])`` does) registers:

* our operators in mmengine's root ``MODELS`` (``conv_cfg=dict(type='ShiftConv2d' | 'AdderConv2d' | ...)``),
* the timm models (``TIMMBackbone`` with ``model_name='shiftadd_mcunet'`` ...),
* ``ShiftAddAugEncoderDecoder`` (mmseg ``MODELS``), ``ShiftAddAugHook`` (``HOOKS``),
* ``FashionMNISTScenesDataset``, ``BrainMRITissueDataset``, ``NucleiDataset`` (``DATASETS``), the offline
  segmentation datasets (docs/segmentation.md),
* ``NonFiniteGuardOptimWrapper`` (``OPTIM_WRAPPERS``) and the atomic local file backend
  ``'shiftaddaug_atomic_local'`` (:mod:`.safe_runtime`).

It needs mmcv (with compiled ops) and mmsegmentation: ``pip install 'shiftaddaug_plugin[mmseg]'``.
"""
from __future__ import annotations

try:
    import mmseg  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the [mmseg] extra
    raise ImportError(
        "shiftaddaug_plugin.mmseg_ext needs mmsegmentation and mmcv with compiled ops; install them with "
        "pip install 'shiftaddaug_plugin[mmseg]' (see docs/ARCHITECTURE.md for building mmcv)"
    ) from err

from shiftaddaug_plugin import register_timm_models  # noqa: E402
from shiftaddaug_plugin.registry import register_mmengine_modules  # noqa: E402

from .datasets import FashionMNISTScenesDataset, generate_scenes  # noqa: E402
from .export import (  # noqa: E402
    EXPORT_FORMAT,
    build_deploy_model,
    export_checkpoint_path,
    exported_checkpoint,
    is_exported_checkpoint,
    load_exported,
    save_exported,
)
from .hook import ShiftAddAugHook  # noqa: E402
from .prepared_datasets import BrainMRITissueDataset, NucleiDataset  # noqa: E402
from .safe_runtime import ATOMIC_BACKEND, AtomicLocalBackend, NonFiniteGuardOptimWrapper  # noqa: E402
from .scenes import SCENE_CLASSES, SceneConfig, compose_scene  # noqa: E402
from .segmentor import ShiftAddAugEncoderDecoder  # noqa: E402

register_timm_models()  # shiftadd_* timm models for TIMMBackbone
register_mmengine_modules()

__all__ = [
    "ATOMIC_BACKEND",
    "AtomicLocalBackend",
    "NonFiniteGuardOptimWrapper",
    "BrainMRITissueDataset",
    "NucleiDataset",
    "EXPORT_FORMAT",
    "FashionMNISTScenesDataset",
    "SCENE_CLASSES",
    "SceneConfig",
    "ShiftAddAugEncoderDecoder",
    "ShiftAddAugHook",
    "build_deploy_model",
    "compose_scene",
    "export_checkpoint_path",
    "exported_checkpoint",
    "generate_scenes",
    "is_exported_checkpoint",
    "load_exported",
    "save_exported",
]
