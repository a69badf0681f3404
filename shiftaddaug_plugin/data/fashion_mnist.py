"""Fashion-MNIST read from the original idx files shipped offline by Debian (docs/ARCHITECTURE.md).

The Debian package ``dataset-fashion-mnist`` installs ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` under
``/usr/share/datasets/fashion-mnist/``. Nothing is downloaded: the folder is ``root=`` if given, else
``$SHIFTADDAUG_FMNIST_DIR``, else the Debian path. Plain (un-gzipped) files are accepted too.

idx format (LeCun): 2 zero bytes, 1 type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), 1 byte ``ndim``; ``ndim`` big-endian uint32 sizes; then the data, big-endian, C order. The header is
validated and the payload size must match it exactly, so a truncated or corrupt file is an error, never a
silently short dataset.
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DEFAULT_FMNIST_DIR",
    "FMNIST_DIR_ENV",
    "IdxFormatError",
    "parse_idx",
    "read_idx",
    "write_idx",
    "resolve_fmnist_dir",
    "FashionMNIST",
]

#: class names in label order (Zalando Research, Fashion-MNIST README)
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_DIR_ENV = "SHIFTADDAUG_FMNIST_DIR"

_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: idx type byte -> numpy dtype (big-endian, as stored)
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_INSTALL_HINT = (
    f"install the Debian package (sudo apt-get install dataset-fashion-mnist) or set {FMNIST_DIR_ENV} / pass "
    "root= to a folder holding the original idx files"
)


class IdxFormatError(ValueError):
    """An idx file whose header or size is invalid (corrupt, truncated or not an idx file)."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise IdxFormatError(
            f"{path}: cannot read the file ({err}); it is corrupt or truncated, re-install it"
        ) from err


def parse_idx(buffer: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an idx byte string into a native-endian numpy array; ``IdxFormatError`` on any inconsistency."""
    if len(buffer) < 4:
        raise IdxFormatError(f"{source}: {len(buffer)} bytes, too short for an idx header (4 bytes magic)")
    zero0, zero1, type_code, ndim = buffer[0], buffer[1], buffer[2], buffer[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(
            f"{source}: bad magic number 0x{buffer[:4].hex()}; an idx file starts with two zero bytes "
            "(is it still gzip-compressed without a .gz suffix, or not an idx file?)"
        )
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        valid = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise IdxFormatError(f"{source}: unknown idx type byte 0x{type_code:02X} (valid: {valid})")
    if ndim == 0:
        raise IdxFormatError(f"{source}: idx header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(buffer) < header_size:
        raise IdxFormatError(f"{source}: truncated header ({len(buffer)} bytes, need {header_size} for {ndim} dims)")
    shape = tuple(int(s) for s in np.frombuffer(buffer, dtype=">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buffer) != expected:
        raise IdxFormatError(
            f"{source}: size mismatch: header declares shape {shape} of {dtype.name} ({expected} bytes with header) "
            f"but the file has {len(buffer)} bytes; it is truncated or corrupt, re-install it"
        )
    array = np.frombuffer(buffer, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one idx file (``.gz`` or plain) into a read-only native-endian numpy array (cached per file version)."""
    file = Path(path)
    stat = file.stat()  # FileNotFoundError for a missing file
    return _read_idx_cached(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    array = parse_idx(_read_bytes(Path(path)), source=path)
    array.setflags(write=False)  # shared by every reader of this file version
    return array


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzip-compressed when ``path`` ends in ``.gz``); inverse of ``read_idx``."""
    array = np.asarray(array)
    codes = {np.dtype(d).newbyteorder("=").str: code for code, d in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise TypeError(f"idx cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"idx stores 1 to 255 dimensions, got {array.ndim}")
    payload = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload += np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    target = Path(path)
    if target.suffix == ".gz":
        with gzip.open(target, "wb") as handle:
            handle.write(payload)
    else:
        target.write_bytes(payload)


def resolve_fmnist_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The Fashion-MNIST folder: ``root`` if given, else ``$SHIFTADDAUG_FMNIST_DIR``, else the Debian path."""
    if root is not None:
        return Path(root)
    env = os.environ.get(FMNIST_DIR_ENV)
    return Path(env) if env else Path(DEFAULT_FMNIST_DIR)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _stratified_indices(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """First ``per_class`` items of every class, in file order."""
    counts = np.bincount(labels, minlength=num_classes)
    short = {c: int(n) for c, n in enumerate(counts) if n < per_class}
    if short:
        raise ValueError(f"subset={per_class} per class is more than some classes have ({short}); use a smaller subset")
    keep = np.zeros(labels.shape[0], dtype=bool)
    for c in range(num_classes):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


class FashionMNIST(Dataset):
    """Fashion-MNIST as a ``torch.utils.data.Dataset`` returning ``(image, label)``.

    Args:
        root: folder of the idx files (default: ``$SHIFTADDAUG_FMNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``).
        split: ``'train'`` (60k) or ``'test'`` (10k).
        transform: applied to the image (a PIL image in mode ``'L'``, or a tensor with ``output='tensor'``).
        target_transform: applied to the integer label.
        output: ``'pil'`` (default; works with timm/torchvision transforms) or ``'tensor'``
            (float32 ``1 x H x W`` in [0, 1]).
        subset: keep only ``subset`` items (fast tests): the first ``subset`` of the split with
            ``subset_mode='first'``, or the first ``subset`` of *every class* with ``subset_mode='stratified'``.
        subset_mode: ``'first'`` or ``'stratified'``.

    Attributes: ``data`` (uint8 ``N x H x W``, read-only), ``targets`` (int64 ``N``), ``classes``, ``class_to_idx``.
    """

    classes: tuple[str, ...] = FASHION_MNIST_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: Literal["train", "test"] = "train",
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        *,
        output: Literal["pil", "tensor"] = "pil",
        subset: int | None = None,
        subset_mode: Literal["first", "stratified"] = "first",
    ) -> None:
        if split not in _SPLIT_FILES:
            raise ValueError(f"split={split!r} is not a Fashion-MNIST split; use 'train' or 'test'")
        if output not in ("pil", "tensor"):
            raise ValueError(f"output={output!r}; use 'pil' (PIL images, mode 'L') or 'tensor'")
        if subset_mode not in ("first", "stratified"):
            raise ValueError(f"subset_mode={subset_mode!r}; use 'first' or 'stratified'")
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
            raise ValueError(f"subset={subset!r} must be a positive int (or None for the whole split)")
        self.root = resolve_fmnist_dir(root)
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.output = output
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

        image_path, label_path = self._locate_files()
        images = read_idx(image_path)
        labels = read_idx(label_path)
        self._validate(images, labels, image_path, label_path)
        labels = labels.astype(np.int64)
        if subset is not None:
            if subset_mode == "first":
                if subset > labels.shape[0]:
                    raise ValueError(f"subset={subset} exceeds the {labels.shape[0]} items of the {split} split")
                index = np.arange(subset)
            else:
                index = _stratified_indices(labels, subset, len(self.classes))
            images, labels = images[index], labels[index]
        images.setflags(write=False)
        labels.setflags(write=False)
        self.data: np.ndarray = images
        self.targets: np.ndarray = labels

    def _locate_files(self) -> tuple[Path, Path]:
        stems = _SPLIT_FILES[self.split]
        found = [_find_idx_file(self.root, stem) for stem in stems]
        missing = [stem for stem, path in zip(stems, found) if path is None]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST {self.split} files not found in {self.root} (missing {', '.join(missing)}[.gz]); "
                + _INSTALL_HINT
            )
        return found[0], found[1]  # type: ignore[return-value]

    def _validate(self, images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
        if images.dtype != np.uint8 or images.ndim != 3:
            raise IdxFormatError(
                f"{image_path}: expected uint8 images of shape N x H x W, got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise IdxFormatError(f"{label_path}: expected uint8 labels of shape N, got {labels.dtype} {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise IdxFormatError(
                f"{image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels; "
                "the files belong to different splits or one is corrupt"
            )
        if labels.size and int(labels.max()) >= len(self.classes):
            raise IdxFormatError(
                f"{label_path}: label {int(labels.max())} out of range for {len(self.classes)} classes; corrupt file"
            )

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        pixels = self.data[index]
        image: Any
        if self.output == "pil":
            from PIL import Image

            image = Image.fromarray(np.array(pixels, dtype=np.uint8))  # 2-D uint8 -> mode 'L'
        else:
            image = torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(0)
        target: Any = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, root={str(self.root)!r}, items={len(self)}, "
            f"image_size={tuple(self.data.shape[1:])}, output={self.output!r})"
        )
