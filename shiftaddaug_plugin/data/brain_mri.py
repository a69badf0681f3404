"""Brain tissue segmentation slices from the MNI152 template shipped in the nilearn wheel (docs/segmentation.md).

Source: the ICBM 2009a symmetric template (T1, grey- and white-matter probability maps, 1 mm, 197 x 233 x 189)
under ``nilearn/datasets/data``, read with nibabel. Per axial slice ``z``:

* image: the T1 intensity averaged over ``step x step`` in-plane blocks, as uint8;
* label: ``argmax(p_bg, p_gm, p_wm)`` of the block-averaged tissue maps with ``p_bg = max(0, 1 - p_gm - p_wm)``
  (0 background, 1 grey matter, 2 white matter);
* crop ``x in [18, 178)``, ``y in [20, 212)`` (the head), rows run anterior to posterior: 96 x 80 px at 2 mm.

Splits interleave along ``z`` so each covers the whole brain: ``z in [10, 154)`` is cut into periods of 24 slices;
offsets 0-13 train, offsets 17-20 evaluate (test in even periods, val in odd ones), so no evaluation slice is
within 3 slices (3 mm) of a training slice.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .package_files import package_file

__all__ = ["BRAIN_CLASSES", "BRAIN_PALETTE", "BRAIN_SPLITS", "brain_samples", "load_brain_volumes"]

BRAIN_CLASSES = ("background", "grey matter", "white matter")
BRAIN_PALETTE = ((0, 0, 0), (220, 120, 60), (240, 240, 180))

_Z_RANGE = (10, 154)
_PERIOD = 24
_TRAIN_OFFSETS = (0, 14)
_EVAL_OFFSETS = (17, 21)
_CROP_X = (18, 178)
_CROP_Y = (20, 212)
_INSTALL = "pip install --no-deps nilearn==0.14.1"
_FILE = "datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _splits() -> dict[str, list[tuple[int, int]]]:
    splits: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
    for period, start in enumerate(range(_Z_RANGE[0], _Z_RANGE[1], _PERIOD)):
        splits["train"].append((start + _TRAIN_OFFSETS[0], start + _TRAIN_OFFSETS[1]))
        splits["test" if period % 2 == 0 else "val"].append((start + _EVAL_OFFSETS[0], start + _EVAL_OFFSETS[1]))
    return splits


BRAIN_SPLITS: dict[str, list[tuple[int, int]]] = _splits()


def load_brain_volumes() -> tuple[np.ndarray, np.ndarray]:
    """``(t1, probs)``: the T1 volume scaled to [0, 1] and the ``(3, X, Y, Z)`` bg / gm / wm probabilities."""
    try:
        import nibabel
    except ImportError:
        raise ImportError("the brain MRI data is read with nibabel: `pip install nibabel` (or `make seg-data`)") \
            from None

    def volume(kind: str) -> np.ndarray:
        path = package_file("nilearn", _FILE.format(kind), _INSTALL)
        image: Any = nibabel.load(path)  # a Nifti1Image (nibabel types load() as the base class)
        return np.asarray(image.get_fdata(dtype=np.float64)) / 255.0

    t1, gm, wm = volume("t1"), volume("gm"), volume("wm")
    bg = np.clip(1.0 - gm - wm, 0.0, None)
    return t1, np.stack([bg, gm, wm])


def _block_mean(plane: np.ndarray, step: int) -> np.ndarray:
    x, y = plane.shape[-2:]
    return plane.reshape(*plane.shape[:-2], x // step, step, y // step, step).mean(axis=(-3, -1))


def brain_samples(split: str, step: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image uint8 (H, W), label uint8 (H, W))`` per slice of ``split``, in increasing ``z``."""
    if split not in BRAIN_SPLITS:
        raise ValueError(f"split={split!r}; use one of {sorted(BRAIN_SPLITS)}")
    width, height = _CROP_X[1] - _CROP_X[0], _CROP_Y[1] - _CROP_Y[0]
    if step < 1 or width % step or height % step:
        raise ValueError(f"step={step}: the block size in mm must divide {width} and {height} (e.g. 1, 2, 4)")
    t1, probs = load_brain_volumes()
    for lo, hi in BRAIN_SPLITS[split]:
        for z in range(lo, hi):
            image = _block_mean(t1[_CROP_X[0]:_CROP_X[1], _CROP_Y[0]:_CROP_Y[1], z], step)
            tissue = _block_mean(probs[:, _CROP_X[0]:_CROP_X[1], _CROP_Y[0]:_CROP_Y[1], z], step)
            # (x, y) -> (row = anterior first, column = x)
            image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8).T[::-1]
            label = np.argmax(tissue, axis=0).astype(np.uint8).T[::-1]
            yield np.ascontiguousarray(image), np.ascontiguousarray(label)
