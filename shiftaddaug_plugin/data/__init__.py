"""Offline datasets (docs/ARCHITECTURE.md). Light: numpy/torch only (PIL on first image access); no timm/mmseg
import. The segmentation data (``brain_mri``, ``nuclei``, their atomic cache ``seg_cache``; docs/segmentation.md)
is imported from its own modules; its readers (nibabel, tifffile) load only when a split is prepared."""
from __future__ import annotations

from .fashion_mnist import (
    DEFAULT_FMNIST_DIR,
    FASHION_MNIST_CLASSES,
    FMNIST_DIR_ENV,
    FashionMNIST,
    IdxFormatError,
    parse_idx,
    read_idx,
    resolve_fmnist_dir,
    write_idx,
)

__all__ = [
    "DEFAULT_FMNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FMNIST_DIR_ENV",
    "FashionMNIST",
    "IdxFormatError",
    "parse_idx",
    "read_idx",
    "resolve_fmnist_dir",
    "write_idx",
]
