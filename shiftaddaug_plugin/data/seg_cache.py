"""An atomic on-disk cache of prepared segmentation splits (docs/segmentation.md).

A split is a folder ``img/000000.png ...`` (grey images stored as RGB), ``ann/000000.png ...`` (class indices,
mode ``L``) and ``meta.json`` (preparation parameters, ``num_images``, per-class ``pixel_counts``). It is written
into a temporary sibling folder and moved into place with one ``os.replace``, so a killed preparation leaves
either nothing or a complete split; ``check_cache`` refuses a folder that was damaged afterwards, naming the
``rm -r`` that fixes it.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["CorruptCacheError", "check_cache", "prepare_cached", "write_split"]

Sample = tuple[np.ndarray, np.ndarray]


class CorruptCacheError(RuntimeError):
    """A prepared split is damaged; the message names the folder to delete (it is rebuilt on next use)."""


def _name(index: int) -> str:
    return f"{index:06d}.png"


def _fix(folder: str) -> str:
    return f"delete it with `rm -r '{folder}'` and run again (it is rebuilt from the installed data package)"


def write_split(folder: str, samples: Iterable[Sample], meta: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """Write ``samples`` (uint8 ``(H, W)`` image, integer ``(H, W)`` label) to ``folder`` atomically.

    Returns the metadata written to ``meta.json``. Any exception (including ``KeyboardInterrupt``) removes the
    partial copy; ``folder`` itself appears only when complete.
    """
    from PIL import Image

    parent = osp.dirname(osp.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{osp.basename(folder)}.tmp-", dir=parent)
    try:
        os.makedirs(osp.join(tmp, "img"))
        os.makedirs(osp.join(tmp, "ann"))
        counts = np.zeros(num_classes, np.int64)
        n = 0
        for image, label in samples:
            image = np.asarray(image)
            label = np.asarray(label)
            if image.dtype != np.uint8 or image.ndim != 2 or image.shape != label.shape:
                raise ValueError(f"sample {n}: need a uint8 (H, W) image and a label of the same shape, got "
                                 f"{image.dtype} {image.shape} and {label.shape}")
            if label.min() < 0 or label.max() >= num_classes:
                bad = int(label.max()) if label.max() >= num_classes else int(label.min())
                raise ValueError(f"sample {n}: label value {bad} >= num_classes={num_classes} or negative")
            counts += np.bincount(label.ravel().astype(np.int64), minlength=num_classes)
            Image.fromarray(np.repeat(image[..., None], 3, axis=2), mode="RGB").save(osp.join(tmp, "img", _name(n)))
            Image.fromarray(label.astype(np.uint8), mode="L").save(osp.join(tmp, "ann", _name(n)))
            n += 1
        if n == 0:
            raise ValueError(f"no samples to write into {folder}")
        full = dict(meta, num_images=n, pixel_counts=[int(c) for c in counts])
        with open(osp.join(tmp, "meta.json"), "w") as f:
            json.dump(full, f, indent=1, sort_keys=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not osp.isdir(folder):  # not a concurrent writer that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return check_cache(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(json.dumps(full))


def check_cache(folder: str) -> dict[str, Any]:
    """The metadata of a complete prepared split; raises ``CorruptCacheError`` when anything is missing."""
    meta_path = osp.join(folder, "meta.json")
    if not osp.isfile(meta_path):
        raise CorruptCacheError(f"prepared split {folder} has no meta.json (damaged); {_fix(folder)}")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        n = int(meta["num_images"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptCacheError(f"prepared split {folder}: meta.json is unreadable ({err}); {_fix(folder)}") from None
    expected = {_name(i) for i in range(n)}
    for sub in ("img", "ann"):
        present = set(os.listdir(osp.join(folder, sub))) if osp.isdir(osp.join(folder, sub)) else set()
        missing = sorted(expected - present)
        empty = sorted(p for p in expected & present if osp.getsize(osp.join(folder, sub, p)) == 0)
        if missing or empty:
            what = f"missing {missing[:5]}" if missing else f"empty {empty[:5]}"
            raise CorruptCacheError(f"prepared split {folder}: {sub}/ is {what} of {n} images; {_fix(folder)}")
    return meta


def prepare_cached(folder: str, make_samples: Callable[[], Iterable[Sample]], meta: dict[str, Any],
                   num_classes: int) -> dict[str, Any]:
    """Reuse ``folder`` when it exists (checked), otherwise write it from ``make_samples()``."""
    if osp.exists(folder):
        return check_cache(folder)
    return write_split(folder, make_samples(), meta, num_classes)
