"""Real offline segmentation datasets, registered in mmseg's ``DATASETS`` (docs/segmentation.md):

* ``BrainMRITissueDataset``: background / grey matter / white matter on axial slices of the MNI152 template
  (:mod:`shiftaddaug_plugin.data.brain_mri`, data from the nilearn wheel);
* ``NucleiDataset``: background / nucleus tiles of the stardist example image
  (:mod:`shiftaddaug_plugin.data.nuclei`, data from the stardist wheel).

On first use each split is prepared into ``{data_root}/{split}-{key}/{img,ann}/*.png`` (``key`` hashes every
preparation parameter) atomically (:mod:`shiftaddaug_plugin.data.seg_cache`), then read like any
``BaseSegDataset``: stock ``LoadImageFromFile`` / ``LoadAnnotations`` pipelines, ``reduce_zero_label=False``
(class 0 is a real background class), ``IoUMetric``. A corrupted cache raises an error naming the folder to delete.
"""
from __future__ import annotations

import hashlib
import json
import os.path as osp
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from shiftaddaug_plugin.data.brain_mri import BRAIN_CLASSES, BRAIN_PALETTE, BRAIN_SPLITS, brain_samples
from shiftaddaug_plugin.data.nuclei import NUCLEI_CLASSES, NUCLEI_PALETTE, NUCLEI_SPLITS, nuclei_samples
from shiftaddaug_plugin.data.seg_cache import prepare_cached

__all__ = ["BrainMRITissueDataset", "NucleiDataset"]

_FORMAT_VERSION = 2
_FIXED = ("data_prefix", "img_suffix", "seg_map_suffix", "reduce_zero_label")


def _prepared_folder(
    data_root: str | None, name: str, split: str, params: dict[str, Any],
    make: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], num_classes: int,
) -> str:
    if data_root is None:
        raise ValueError(f"data_root=None: give a folder for the prepared {name} data (e.g. 'data/{name}')")
    payload = dict(version=_FORMAT_VERSION, dataset=name, split=split, **params)
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    folder = osp.join(data_root, f"{split}-{key}")
    prepare_cached(folder, make, payload, num_classes)
    return folder


def _check_kwargs(cls: str, kwargs: dict[str, Any]) -> None:
    fixed = sorted(k for k in _FIXED if k in kwargs)
    if fixed:
        raise ValueError(f"{fixed} are fixed by {cls} (prepared layout); remove them")


@DATASETS.register_module()
class BrainMRITissueDataset(BaseSegDataset):
    """Brain tissue (background, grey matter, white matter) on MNI152 axial slices, 96 x 80 px at 2 mm.

    Args:
        split: ``'train'`` (84 slices), ``'val'`` (12) or ``'test'`` (12); interleaved slice ranges with gaps.
        step: in-plane block size in mm (1 gives 192 x 160 px slices).
        data_root: cache folder of the prepared PNGs (default ``data/brain_mri``).
        **kwargs: forwarded to ``BaseSegDataset`` (``pipeline``, ``test_mode``, ``indices``...).
    """

    METAINFO = dict(classes=BRAIN_CLASSES, palette=[list(c) for c in BRAIN_PALETTE])

    def __init__(self, split: str = "train", step: int = 2, data_root: str | None = "data/brain_mri",
                 **kwargs: Any) -> None:
        if split not in BRAIN_SPLITS:
            raise ValueError(f"split={split!r}; use one of {sorted(BRAIN_SPLITS)}")
        _check_kwargs(type(self).__name__, kwargs)
        self.split = split
        folder = _prepared_folder(data_root, "brain_mri", split, dict(step=step),
                                  lambda: brain_samples(split, step), len(BRAIN_CLASSES))
        super().__init__(data_root=folder, data_prefix=dict(img_path="img", seg_map_path="ann"), img_suffix=".png",
                         seg_map_suffix=".png", reduce_zero_label=False, **kwargs)


@DATASETS.register_module()
class NucleiDataset(BaseSegDataset):
    """Nucleus vs background tiles of the stardist fluorescence image; splits are disjoint column regions.

    Args:
        split: ``'train'`` (overlapping tiles every ``stride`` px), ``'val'`` or ``'test'`` (non-overlapping).
        tile: tile side in pixels; stride: train tile spacing.
        data_root: cache folder of the prepared PNGs (default ``data/nuclei``).
        **kwargs: forwarded to ``BaseSegDataset``.
    """

    METAINFO = dict(classes=NUCLEI_CLASSES, palette=[list(c) for c in NUCLEI_PALETTE])

    def __init__(self, split: str = "train", tile: int = 64, stride: int = 16, data_root: str | None = "data/nuclei",
                 **kwargs: Any) -> None:
        if split not in NUCLEI_SPLITS:
            raise ValueError(f"split={split!r}; use one of {sorted(NUCLEI_SPLITS)}")
        _check_kwargs(type(self).__name__, kwargs)
        self.split = split
        folder = _prepared_folder(data_root, "nuclei", split, dict(tile=tile, stride=stride),
                                  lambda: nuclei_samples(split, tile, stride), len(NUCLEI_CLASSES))
        super().__init__(data_root=folder, data_prefix=dict(img_path="img", seg_map_path="ann"), img_suffix=".png",
                         seg_map_suffix=".png", reduce_zero_label=False, **kwargs)
