"""Offline MMSegmentation dataset: Fashion-MNIST scenes (docs/ARCHITECTURE.md), registered as
``FashionMNISTScenesDataset``.

The scenes (:mod:`.scenes`) are generated deterministically on first use into
``{data_root}/{split}-{key}/{img,ann}/{index:06d}.png`` (``key`` hashes every generation parameter, so changing
one never reuses stale files) and then read like any mmseg dataset following ``BaseSegDataset`` conventions:
``img_path`` / ``seg_map_path`` entries, the stock ``LoadImageFromFile`` / ``LoadAnnotations`` / ``PackSegInputs``
pipeline, ``reduce_zero_label=False`` (class 0 is the real *background* class). Generation writes into a
temporary folder renamed atomically, so concurrent ranks or workers never see half-written data.

Train scenes use Fashion-MNIST *train* items, val/test scenes the *t10k* items: no item is shared.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Any

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from shiftaddaug_plugin.data.fashion_mnist import FashionMNIST

from .scenes import SCENE_CLASSES, SCENE_PALETTE, SceneConfig, compose_scene

__all__ = ["FashionMNISTScenesDataset", "generate_scenes"]

_FMNIST_SPLIT = {"train": "train", "val": "test", "test": "test"}
_FORMAT_VERSION = 1


def _scene_key(config: SceneConfig, seed: int, num_images: int, source: str) -> str:
    payload = json.dumps(
        dict(version=_FORMAT_VERSION, config=config.to_dict(), seed=int(seed), num_images=int(num_images),
             source=source),
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def generate_scenes(
    out_dir: str, split: str, num_images: int, config: SceneConfig, seed: int, fmnist_root: str | None = None
) -> str:
    """Write ``num_images`` scenes of ``split`` under ``out_dir/{img,ann}`` (atomically); return ``out_dir``.

    A complete folder (with ``meta.json``) is reused as is.
    """
    from PIL import Image

    if osp.isfile(osp.join(out_dir, "meta.json")):
        return out_dir
    source = FashionMNIST(root=fmnist_root, split=_FMNIST_SPLIT[split], output="tensor")  # type: ignore[arg-type]
    items, labels = np.asarray(source.data), np.asarray(source.targets)
    parent = osp.dirname(osp.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + osp.basename(out_dir) + "-", dir=parent)
    try:
        os.makedirs(osp.join(tmp, "img"))
        os.makedirs(osp.join(tmp, "ann"))
        counts = np.zeros(len(SCENE_CLASSES), dtype=np.int64)
        for index in range(num_images):
            image, mask = compose_scene(items, labels, config, seed, split, index)
            counts += np.bincount(mask.ravel(), minlength=len(SCENE_CLASSES))
            Image.fromarray(image, mode="RGB").save(osp.join(tmp, "img", f"{index:06d}.png"))
            Image.fromarray(mask, mode="L").save(osp.join(tmp, "ann", f"{index:06d}.png"))
        meta = dict(split=split, num_images=num_images, seed=seed, config=config.to_dict(),
                    classes=list(SCENE_CLASSES), pixel_counts=counts.tolist(), source=str(source.root))
        with open(osp.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not osp.isfile(osp.join(out_dir, "meta.json")):  # not a concurrent writer that won the race
                raise
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@DATASETS.register_module()
class FashionMNISTScenesDataset(BaseSegDataset):
    """Multi-class segmentation scenes of Fashion-MNIST items with exact masks (11 classes incl. background).

    Args:
        split: ``'train'`` (scenes from Fashion-MNIST train items) or ``'val'`` / ``'test'`` (t10k items).
        num_images: number of scenes of this split.
        image_size, max_objects, scale_range, alpha_threshold: see :class:`~.scenes.SceneConfig`.
        seed: generation seed; scenes depend only on ``(seed, split, index)``.
        data_root: cache folder of the generated PNGs (default ``data/fmnist_scenes``, mmseg's convention).
        fmnist_root: folder of the Fashion-MNIST idx files (default: Debian's ``/usr/share/datasets/fashion-mnist``
            or ``$SHIFTADDAUG_FMNIST_DIR``).
        **kwargs: forwarded to ``BaseSegDataset`` (``pipeline``, ``test_mode``, ``indices``, ``serialize_data``...).
            ``data_prefix``, ``img_suffix``, ``seg_map_suffix`` and ``reduce_zero_label`` are fixed by this dataset.
    """

    METAINFO = dict(classes=SCENE_CLASSES, palette=[list(c) for c in SCENE_PALETTE])

    def __init__(
        self,
        split: str = "train",
        num_images: int = 1000,
        image_size: int = 64,
        max_objects: int = 4,
        scale_range: tuple[float, float] = (1.0, 1.6),
        alpha_threshold: float = 0.3,
        seed: int = 0,
        data_root: str | None = "data/fmnist_scenes",
        fmnist_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        if split not in _FMNIST_SPLIT:
            raise ValueError(f"split={split!r}; use 'train', 'val' or 'test'")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images={num_images!r} must be a positive int")
        fixed = sorted(k for k in ("data_prefix", "img_suffix", "seg_map_suffix", "reduce_zero_label") if k in kwargs)
        if fixed:
            raise ValueError(f"{fixed} are fixed by FashionMNISTScenesDataset (generated layout); remove them")
        if data_root is None:
            raise ValueError("data_root=None: give a folder for the generated scenes (e.g. 'data/fmnist_scenes')")
        self.split = split
        self.scene_config = SceneConfig(image_size=image_size, max_objects=max_objects,
                                        scale_range=(float(scale_range[0]), float(scale_range[1])),
                                        alpha_threshold=alpha_threshold)
        self.seed = int(seed)
        self.num_images = num_images
        key = _scene_key(self.scene_config, self.seed, num_images, split)
        folder = osp.join(data_root, f"{split}-{key}")
        generate_scenes(folder, split, num_images, self.scene_config, self.seed, fmnist_root)
        super().__init__(
            data_root=folder,
            data_prefix=dict(img_path="img", seg_map_path="ann"),
            img_suffix=".png",
            seg_map_suffix=".png",
            reduce_zero_label=False,
            **kwargs,
        )
