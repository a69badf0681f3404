"""Fashion-MNIST as in-memory tensors for supernet training and the search's accuracy proxy (docs/ARCHITECTURE.md, §7).

The NAS loops need many cheap passes over small slices, so the idx data is read once
(:class:`shiftaddaug_plugin.data.FashionMNIST`), resized to ``img_size`` (bilinear, antialiased) and normalised
(mean 0.2860, std 0.3530: the Fashion-MNIST training-set statistics) into float tensors. The training split is cut
into a **training slice** (supernet training, BN recalibration) and a disjoint **held-out slice** (accuracy proxy of
the search), both stratified by class with a seeded permutation; the test split is never touched by the search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shiftaddaug_plugin.data import FashionMNIST

__all__ = ["FMNIST_MEAN", "FMNIST_STD", "TensorSplits", "load_fmnist_splits", "iterate_batches"]

FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


@dataclass
class TensorSplits:
    """``train_x`` / ``train_y``: supernet training + BN recalibration; ``holdout_x`` / ``holdout_y``: accuracy
    proxy; ``test_x`` / ``test_y``: final evaluation only (may be empty)."""

    train_x: Tensor
    train_y: Tensor
    holdout_x: Tensor
    holdout_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def _to_tensor(images: np.ndarray, img_size: int) -> Tensor:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1)
    if img_size != x.shape[-1]:
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - FMNIST_MEAN) / FMNIST_STD


def _stratified_split(labels: np.ndarray, n_first: int, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_first, per_second = -(-n_first // len(classes)), -(-n_second // len(classes))
    first, second = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        if per_first + per_second > idx.size:
            raise ValueError(f"class {c} has {idx.size} images, fewer than {per_first + per_second} requested; "
                             "lower train_images / holdout_images")
        first.append(idx[:per_first])
        second.append(idx[per_first:per_first + per_second])
    a = rng.permutation(np.concatenate(first))[:n_first]
    b = rng.permutation(np.concatenate(second))[:n_second]
    return a, b


def load_fmnist_splits(img_size: int = 32, train_images: int = 10000, holdout_images: int = 2000,
                       test_images: int = 0, *, root: str | None = None, seed: int = 0) -> TensorSplits:
    """Disjoint stratified training / held-out slices of the Fashion-MNIST training split (+ optional test slice).

    Args:
        img_size: square input size (28 = native; 16 for fast tests; 32 = the training entry point's default).
        train_images / holdout_images: sizes of the two slices (together at most 60000).
        test_images: first ``test_images`` of the test split (0 = none).
        root: idx folder (default ``$SHIFTADDAUG_FMNIST_DIR`` or the Debian path).
        seed: seed of the split permutation.
    """

    for name, value in (("img_size", img_size), ("train_images", train_images), ("holdout_images", holdout_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
    if isinstance(test_images, bool) or not isinstance(test_images, int) or test_images < 0:
        raise ValueError(f"test_images={test_images!r} must be an int >= 0")
    train = FashionMNIST(root, split="train")
    if train_images + holdout_images > len(train):
        raise ValueError(f"train_images + holdout_images = {train_images + holdout_images} exceeds the "
                         f"{len(train)} training images")
    labels = np.asarray(train.targets)
    a, b = _stratified_split(labels, train_images, holdout_images, seed)
    data = np.asarray(train.data)
    if test_images:
        test = FashionMNIST(root, split="test", subset=min(test_images, 10000))
        test_x, test_y = _to_tensor(np.asarray(test.data), img_size), torch.from_numpy(np.asarray(test.targets))
    else:
        test_x, test_y = torch.zeros(0, 1, img_size, img_size), torch.zeros(0, dtype=torch.long)
    return TensorSplits(
        _to_tensor(data[a], img_size), torch.from_numpy(labels[a].copy()),
        _to_tensor(data[b], img_size), torch.from_numpy(labels[b].copy()),
        test_x, test_y,
    )


def iterate_batches(x: Tensor, y: Tensor | None, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Mini-batches ``(x_b, y_b)`` (``y_b`` is ``None`` when ``y`` is); the last batch may be smaller."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    order = torch.randperm(x.shape[0], generator=generator) if shuffle else torch.arange(x.shape[0])
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], (None if y is None else y[idx])
