"""Nucleus segmentation tiles from the annotated fluorescence image in the stardist wheel (docs/segmentation.md).

Source: ``stardist/data/images/img2d.tif`` (512 x 512 fluorescence image) and ``mask2d.tif`` (instance labels),
read with tifffile. The image is normalised to uint8 between its 1st and 99.8th percentiles; the label is
``instance > 0`` (0 background, 1 nucleus).

Splits are disjoint column regions with 16 px gaps: train ``[0, 224)`` (overlapping tiles every ``stride`` px),
val ``[240, 304)`` and test ``[320, 512)`` (non-overlapping tiles), all rows.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .package_files import package_file

__all__ = ["NUCLEI_CLASSES", "NUCLEI_PALETTE", "NUCLEI_SPLITS", "load_nuclei_image", "nuclei_samples"]

NUCLEI_CLASSES = ("background", "nucleus")
NUCLEI_PALETTE = ((0, 0, 0), (60, 220, 90))
NUCLEI_SPLITS: dict[str, tuple[int, int]] = {"train": (0, 224), "val": (240, 304), "test": (320, 512)}

_INSTALL = "pip install --no-deps stardist==0.9.2"
_PERCENTILES = (1.0, 99.8)


def load_nuclei_image() -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (512, 512), mask uint8 (512, 512) in {0, 1})``."""
    try:
        import tifffile
    except ImportError:
        raise ImportError("the nuclei data is read with tifffile: `pip install tifffile` (or `make seg-data`)") \
            from None
    raw = tifffile.imread(package_file("stardist", "data/images/img2d.tif", _INSTALL)).astype(np.float64)
    instances = tifffile.imread(package_file("stardist", "data/images/mask2d.tif", _INSTALL))
    lo, hi = np.percentile(raw, _PERCENTILES)
    image = np.clip(np.rint((raw - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    return image, (instances > 0).astype(np.uint8)


def nuclei_samples(split: str, tile: int = 64, stride: int = 16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image, label)`` tiles of ``split``, row-major; train tiles every ``stride`` px, others every tile."""
    if split not in NUCLEI_SPLITS:
        raise ValueError(f"split={split!r}; use one of {sorted(NUCLEI_SPLITS)}")
    val_width = NUCLEI_SPLITS["val"][1] - NUCLEI_SPLITS["val"][0]
    if not 16 <= tile <= val_width:
        raise ValueError(f"tile={tile}: use 16 <= tile <= {val_width} (the width of the val region)")
    if stride < 1:
        raise ValueError(f"stride={stride}: use a positive tile spacing in pixels")
    image, mask = load_nuclei_image()
    c0, c1 = NUCLEI_SPLITS[split]
    step = stride if split == "train" else tile
    for r in range(0, image.shape[0] - tile + 1, step):
        for c in range(c0, c1 - tile + 1, step):
            yield image[r:r + tile, c:c + tile].copy(), mask[r:r + tile, c:c + tile].copy()
