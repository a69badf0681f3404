"""Exported MF-target checkpoints of a :class:`~.segmentor.ShiftAddAugEncoderDecoder` (docs/algorithms.md §4, §5).

An exported checkpoint is an ordinary mmengine checkpoint (``{'meta': ..., 'state_dict': ...}``, plain types and
tensors only, loadable with ``torch.load(weights_only=True)``) whose ``state_dict`` is that of the slim
multiplication-free target: it loads into the same config built with ``model.deploy=True``, so mmseg's own
``tools/test.py`` evaluates it (``tools/test_mmseg.py`` adds ``model.deploy=True`` by itself).
``meta['shiftaddaug']`` records the format, the converter settings and where the weights came from.
"""
from __future__ import annotations

import dataclasses
import os.path as osp
from typing import Any, Mapping

import torch
from torch import nn

from shiftaddaug_plugin.convert import export

from ..atomic import atomic_write

__all__ = ["EXPORT_FORMAT", "export_checkpoint_path", "export_parts", "exported_checkpoint", "save_exported",
           "load_exported", "is_exported_checkpoint", "build_deploy_model"]

EXPORT_FORMAT = "shiftaddaug_mf_target"
_EXPORT_VERSION = 1


def export_checkpoint_path(checkpoint_path: str, suffix: str = "_mf_target.pth") -> str:
    """``work_dir/iter_100.pth`` -> ``work_dir/iter_100_mf_target.pth``."""
    root, ext = osp.splitext(checkpoint_path)
    return (root if ext == ".pth" else checkpoint_path) + suffix


def export_parts(model: nn.Module) -> nn.Module:
    """The slim MF target of a hybrid segmentor's backbone/neck/heads (pure: ``model`` is untouched). Its
    ``state_dict`` keys are the segmentor's (``backbone.*``, ``decode_head.*`` ...)."""

    parts = getattr(model, "parts", None)
    if parts is None:
        raise TypeError(f"export needs a ShiftAddAugEncoderDecoder, got {type(model).__name__}")
    return export(parts())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def exported_checkpoint(model: nn.Module, *, source_checkpoint: str | None = None, iteration: int | None = None,
                        dataset_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The exported checkpoint dict of a hybrid segmentor (BN statistics as they are: recalibrate first)."""
    slim = export_parts(model)
    state = {k: v.detach().cpu().clone() for k, v in slim.state_dict().items()}
    meta: dict[str, Any] = dict(shiftaddaug=dict(
        format=EXPORT_FORMAT, version=_EXPORT_VERSION, convert_cfg=_plain(getattr(model, "convert_config", None)),
        source_checkpoint=source_checkpoint, iter=iteration, cfg_options={"model.deploy": True}))
    if iteration is not None:
        meta["iter"] = int(iteration)
    if dataset_meta is not None:
        meta["dataset_meta"] = _plain(dataset_meta)
    return dict(meta=meta, state_dict=state)


def save_exported(model: nn.Module, path: str, **kwargs: Any) -> str | None:
    """Write :func:`exported_checkpoint` to ``path`` atomically (temp file + rename), on the main process only."""
    from mmengine.dist import is_main_process

    if not is_main_process():
        return None
    checkpoint = exported_checkpoint(model, **kwargs)
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))
    return path


def is_exported_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is an exported MF target."""
    meta = checkpoint.get("meta") or {}
    return isinstance(meta, Mapping) and (meta.get("shiftaddaug") or {}).get("format") == EXPORT_FORMAT


def load_exported(path: str) -> dict[str, Any]:
    """Load an exported checkpoint with ``weights_only=True``; ``ValueError`` if it is not one."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not is_exported_checkpoint(checkpoint):
        raise ValueError(f"{path} is not an exported ShiftAddAug MF target (no meta.shiftaddaug.format="
                         f"{EXPORT_FORMAT!r}); export a training checkpoint with tools/export_mmseg.py first")
    return checkpoint


def build_deploy_model(cfg: Any, checkpoint: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``cfg.model`` with ``deploy=True`` (the slim MF structure) and load an exported checkpoint into it."""
    from mmseg.registry import MODELS

    model_cfg = cfg.model.copy() if hasattr(cfg, "model") else dict(cfg).copy()
    if model_cfg.get("type") != "ShiftAddAugEncoderDecoder":
        raise ValueError(f"model.type={model_cfg.get('type')!r}: deploy models are ShiftAddAugEncoderDecoder configs")
    model_cfg["deploy"] = True
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
        meta = checkpoint.get("meta") or {}
        if "dataset_meta" in meta:
            model.dataset_meta = meta["dataset_meta"]
    return model.eval()
