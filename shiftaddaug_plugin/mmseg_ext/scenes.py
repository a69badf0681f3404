"""Offline multi-class segmentation scenes composed from Fashion-MNIST items (docs/ARCHITECTURE.md).

Pure numpy (no mmseg import): :func:`compose_scene` pastes 1..``max_objects`` Fashion-MNIST items, each scaled,
tinted and alpha-blended, onto a smooth random background. The mask is exact: a pixel belongs to the item
pasted last whose alpha there is ``> alpha_threshold``; everything else is background. Labels are
``0 = background`` and ``1 + fashion_label`` for the ten Fashion-MNIST classes (11 classes in total).

Every scene is a pure function of ``(seed, split, index)`` (one ``numpy.random.Generator`` per scene), so a
dataset of ``n`` scenes is the prefix of any larger one and regeneration is bit-identical.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["SCENE_CLASSES", "SCENE_PALETTE", "SceneConfig", "compose_scene", "resize_bilinear"]

#: class names: background + Fashion-MNIST classes in label order
SCENE_CLASSES: tuple[str, ...] = (
    "background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: fixed RGB palette for visualisation (one colour per class)
SCENE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SceneConfig:
    """Generation parameters of a scene (all of them enter the cache key).

    Args:
        image_size: side of the square canvas in pixels.
        max_objects: each scene holds ``1..max_objects`` items (uniform).
        scale_range: an item (28x28) is resized by a factor drawn uniformly from this range.
        alpha_threshold: an item pixel with normalised intensity above this is labelled with the item's class.
        background_cells: the background is bilinear noise interpolated from a ``cells x cells`` grid.
        background_max: background intensities lie in ``[0, background_max]`` (items are tinted brighter).
    """

    image_size: int = 64
    max_objects: int = 4
    scale_range: tuple[float, float] = (1.0, 1.6)
    alpha_threshold: float = 0.3
    background_cells: int = 5
    background_max: int = 110

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 28:
            raise ValueError(f"image_size={self.image_size!r} must be an int >= 28 (a Fashion-MNIST item is 28x28)")
        if not isinstance(self.max_objects, int) or self.max_objects < 1:
            raise ValueError(f"max_objects={self.max_objects!r} must be a positive int")
        lo, hi = (float(v) for v in self.scale_range)
        if not 0.25 <= lo <= hi:
            raise ValueError(f"scale_range={self.scale_range!r} must be (lo, hi) with 0.25 <= lo <= hi")
        if round(28 * hi) > self.image_size:
            raise ValueError(
                f"scale_range upper bound {hi} makes items of {round(28 * hi)} px, larger than image_size="
                f"{self.image_size}; lower the scale or raise image_size"
            )
        if not 0.0 < self.alpha_threshold < 1.0:
            raise ValueError(f"alpha_threshold={self.alpha_threshold!r} must lie in (0, 1)")
        if not isinstance(self.background_cells, int) or self.background_cells < 2:
            raise ValueError(f"background_cells={self.background_cells!r} must be an int >= 2")
        if not 0 <= self.background_max <= 200:
            raise ValueError(f"background_max={self.background_max!r} must lie in [0, 200] (items need contrast)")
        object.__setattr__(self, "scale_range", (lo, hi))

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict (JSON / checkpoint friendly)."""
        out = asdict(self)
        out["scale_range"] = list(self.scale_range)
        return out


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a ``H x W`` or ``H x W x C`` float array (pixel centres aligned, edges clamped)."""
    h, w = image.shape[:2]
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0).reshape(-1, 1, *([1] * (image.ndim - 2)))
    wx = (xs - x0).reshape(1, -1, *([1] * (image.ndim - 2)))
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def compose_scene(
    items: np.ndarray, labels: np.ndarray, config: SceneConfig, seed: int, split: str, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Compose scene ``index`` of ``split``.

    Args:
        items: uint8 ``N x 28 x 28`` Fashion-MNIST images (the pool items are drawn from).
        labels: their labels (``N``, values 0..9).
        config: generation parameters.
        seed, split, index: identify the scene; the result depends on nothing else.

    Returns:
        ``(image, mask)``: uint8 RGB ``S x S x 3`` and uint8 ``S x S`` with values in ``0..10``.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split={split!r}; use one of {sorted(_SPLIT_IDS)}")
    if items.ndim != 3 or items.shape[0] != labels.shape[0] or items.shape[0] == 0:
        raise ValueError(f"items must be N x H x W with N == len(labels) > 0, got {items.shape} and {labels.shape}")
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    size = config.image_size
    grid = rng.uniform(0.0, config.background_max, size=(config.background_cells, config.background_cells, 3))
    canvas = resize_bilinear(grid, size, size)
    canvas += rng.normal(0.0, 4.0, size=canvas.shape)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, config.max_objects + 1))):
        pick = int(rng.integers(0, items.shape[0]))
        side = int(round(items.shape[1] * rng.uniform(*config.scale_range)))
        alpha = np.clip(resize_bilinear(items[pick].astype(np.float64) / 255.0, side, side), 0.0, 1.0)
        top = int(rng.integers(0, size - side + 1))
        left = int(rng.integers(0, size - side + 1))
        colour = rng.uniform(140.0, 255.0, size=3)
        window = (slice(top, top + side), slice(left, left + side))
        a = alpha[..., None]
        canvas[window] = canvas[window] * (1.0 - a) + colour * a
        mask[window][alpha > config.alpha_threshold] = np.uint8(1 + int(labels[pick]))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, mask
