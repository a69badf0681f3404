"""Fashion-MNIST idx reader (docs/ARCHITECTURE.md): synthetic idx files in tmp_path, plus one real read when
installed."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftaddaug_plugin.data import (
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


def _raw_idx(array: np.ndarray, type_code: int, big_endian_dtype: str) -> bytes:
    """Independent idx encoder (struct-based) used to check the reader."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian_dtype).tobytes()


def _make_split(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = True
) -> None:
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        raw = _raw_idx(array.astype(np.uint8), 0x08, "u1")
        path = folder / (stem + suffix)
        if gz:
            with gzip.open(path, "wb") as handle:
                handle.write(raw)
        else:
            path.write_bytes(raw)


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array([3, 1, 3, 0, 2, 1, 3, 0, 9, 1, 2, 0], dtype=np.uint8)
    images = rng.integers(0, 256, size=(labels.size, 4, 5), dtype=np.uint8)
    _make_split(tmp_path, "train", images, labels, gz=True)
    _make_split(tmp_path, "test", images[:6], labels[:6], gz=False)
    return tmp_path, images, labels


# ---------------------------------------------------------------------------------------------------- idx codec
@pytest.mark.parametrize(
    "dtype,code,be",
    [(np.uint8, 0x08, "u1"), (np.int8, 0x09, "i1"), (np.int16, 0x0B, ">i2"), (np.int32, 0x0C, ">i4"),
     (np.float32, 0x0D, ">f4"), (np.float64, 0x0E, ">f8")],
)
def test_parse_idx_matches_independent_encoder(dtype: type, code: int, be: str) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 2, 4)) * 50).astype(dtype)
    decoded = parse_idx(_raw_idx(array, code, be))
    assert decoded.shape == array.shape
    assert decoded.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_roundtrip(tmp_path: Path, suffix: str) -> None:
    array = np.arange(-30, 30, dtype=np.int32).reshape(3, 4, 5)
    path = tmp_path / f"x.idx{suffix}"
    write_idx(path, array)
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert raw == _raw_idx(array, 0x0C, ">i4")  # the writer emits the exact idx layout
    loaded = read_idx(path)
    np.testing.assert_array_equal(loaded, array)
    assert not loaded.flags.writeable  # cached arrays are shared: read-only


def test_read_idx_sees_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "y.idx"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    assert read_idx(path).sum() == 0
    write_idx(path, np.ones(5, dtype=np.uint8))  # new size -> cache key changes
    np.testing.assert_array_equal(read_idx(path), np.ones(5, dtype=np.uint8))


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="uint8"):
        write_idx(tmp_path / "z.idx", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    "payload,match",
    [
        (b"\x00\x00", "too short"),
        (b"\x1f\x8b\x08\x03" + b"\x00" * 8, "bad magic"),  # gzip data without .gz suffix
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown idx type"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 4, "size mismatch"),  # truncated payload
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 6, "size mismatch"),  # trailing bytes
    ],
)
def test_parse_idx_rejects_corrupt_headers(payload: bytes, match: str) -> None:
    with pytest.raises(IdxFormatError, match=match):
        parse_idx(payload, source="bad.idx")


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.idx.gz"
    good = gzip.compress(_raw_idx(np.zeros((2, 2), np.uint8), 0x08, "u1"))
    path.write_bytes(good[: len(good) // 2])  # truncated archive
    with pytest.raises(IdxFormatError, match="corrupt or truncated"):
        read_idx(path)
    assert issubclass(IdxFormatError, ValueError)


# ---------------------------------------------------------------------------------------------------- dataset
def test_dataset_pil_items_match_files(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = tiny
    ds = FashionMNIST(root, split="train")
    assert len(ds) == labels.size
    assert ds.classes == FASHION_MNIST_CLASSES and ds.class_to_idx["Ankle boot"] == 9
    for i in (0, 5, 11):
        image, target = ds[i]
        assert image.mode == "L" and image.size == (5, 4)  # PIL size is (W, H)
        np.testing.assert_array_equal(np.asarray(image), images[i])
        assert target == int(labels[i]) and isinstance(target, int)
    assert "items=12" in repr(ds)


def test_dataset_tensor_output_and_transforms(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = tiny
    ds = FashionMNIST(root, split="test", output="tensor", transform=lambda t: t * 2.0,
                      target_transform=lambda y: FASHION_MNIST_CLASSES[y])
    assert len(ds) == 6  # plain (un-gzipped) files are read too
    image, target = ds[2]
    assert image.dtype == torch.float32 and image.shape == (1, 4, 5)
    expected = torch.from_numpy(images[2].astype(np.float64) / 255.0 * 2.0)
    torch.testing.assert_close(image[0].double(), expected, rtol=0, atol=1e-6)
    assert target == FASHION_MNIST_CLASSES[int(labels[2])]


def test_dataset_works_with_dataloader(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, labels = tiny
    loader = torch.utils.data.DataLoader(FashionMNIST(root, output="tensor"), batch_size=5)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    assert torch.cat([b[1] for b in batches]).tolist() == labels.tolist()


def test_subset_first(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = tiny
    first = FashionMNIST(root, subset=4)
    assert first.targets.tolist() == labels[:4].tolist()
    np.testing.assert_array_equal(first.data, images[:4])
    # the tiny split lacks classes 4-8: one item per class cannot be drawn
    with pytest.raises(ValueError, match="more than some classes have"):
        FashionMNIST(root, subset=1, subset_mode="stratified")


def test_stratified_subset_takes_first_n_per_class_in_file_order(tmp_path: Path) -> None:
    labels = np.array([c for _ in range(3) for c in range(10)][::-1], dtype=np.uint8)  # 9..0, 9..0, 9..0
    images = np.arange(labels.size, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    _make_split(tmp_path, "train", images, labels)
    ds = FashionMNIST(tmp_path, subset=2, subset_mode="stratified")
    assert len(ds) == 20
    assert np.bincount(ds.targets, minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(ds.data[:, 0, 0], np.arange(20))  # first two of each class, file order kept
    with pytest.raises(ValueError, match="more than some classes have"):
        FashionMNIST(tmp_path, subset=4, subset_mode="stratified")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(split="val"), "use 'train' or 'test'"),
        (dict(output="numpy"), "'pil'"),
        (dict(subset=0), "positive int"),
        (dict(subset=2.5), "positive int"),
        (dict(subset=100), "exceeds"),
        (dict(subset=2, subset_mode="random"), "'stratified'"),
    ],
)
def test_bad_arguments(tiny: tuple[Path, np.ndarray, np.ndarray], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FashionMNIST(tiny[0], **kwargs)


def test_missing_files_tell_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FMNIST_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        FashionMNIST(tmp_path / "nowhere")
    message = str(info.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message and FMNIST_DIR_ENV in message
    assert "train-images-idx3-ubyte" in message


def test_env_var_overrides_default_and_root_overrides_env(
    tiny: tuple[Path, np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tiny[0]
    monkeypatch.delenv(FMNIST_DIR_ENV, raising=False)
    assert resolve_fmnist_dir() == Path(DEFAULT_FMNIST_DIR)
    monkeypatch.setenv(FMNIST_DIR_ENV, str(root))
    assert resolve_fmnist_dir() == root
    assert len(FashionMNIST(split="test")) == 6
    other = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError):
        FashionMNIST(other)  # explicit root wins over the env var


def test_inconsistent_files_are_rejected(tmp_path: Path) -> None:
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    _make_split(tmp_path, "train", images, np.array([0, 1], dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="3 images but .* 2 labels"):
        FashionMNIST(tmp_path)
    _make_split(tmp_path, "train", images, np.array([0, 1, 10], dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="label 10 out of range"):
        FashionMNIST(tmp_path)
    labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(labels_path, "wb") as handle:  # labels stored as 2-D: wrong file in place of the labels
        handle.write(_raw_idx(np.zeros((3, 1), np.uint8), 0x08, "u1"))
    with pytest.raises(IdxFormatError, match="labels of shape N"):
        FashionMNIST(tmp_path)


@pytest.mark.skipif(not Path(DEFAULT_FMNIST_DIR).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FMNIST_DIR_ENV, raising=False)
    ds = FashionMNIST(split="test")
    assert len(ds) == 10_000 and ds.data.shape == (10_000, 28, 28)
    assert np.bincount(ds.targets).tolist() == [1000] * 10
    image, target = ds[0]
    assert image.mode == "L" and image.size == (28, 28) and 0 <= target < 10
    assert 0 < float(ds.data.mean()) < 255


def test_holdout_split_is_disjoint_fixed_and_validated() -> None:
    from torch.utils.data import TensorDataset

    from shiftaddaug_plugin.train.data import holdout_split

    ds = TensorDataset(torch.arange(1000))
    rest, held = holdout_split(ds, 100)
    rest_ids = {int(rest[i][0]) for i in range(len(rest))}
    held_ids = {int(held[i][0]) for i in range(len(held))}
    assert len(held_ids) == 100 and len(rest_ids) == 900 and not rest_ids & held_ids
    _, again = holdout_split(ds, 100)
    assert [int(again[i][0]) for i in range(100)] == [int(held[i][0]) for i in range(100)]  # same for every run
    assert held_ids != set(range(100))  # a random permutation, not the first images
    for bad in (0, 1000):
        with pytest.raises(ValueError, match="--holdout-val"):
            holdout_split(ds, bad)
