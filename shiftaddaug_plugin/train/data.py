"""Datasets and loaders of ``shiftaddaug-train`` (docs/algorithms.md §4, docs/ARCHITECTURE.md).

* ``--dataset fashion_mnist`` (default, offline): :class:`shiftaddaug_plugin.data.FashionMNIST` read from the Debian
  idx files. **Choice: ``in_chans=1``.** The images are grey; replicating them to 3 channels would only triple the
  stem's (multiplicative) work and parameters without adding information. Images are resized to ``--img-size``
  (default 32, the CIFAR-like resolution of docs/algorithms.md §9), then light augmentation only (docs/algorithms.md
  §4): random crop
  with ``--crop-padding`` (default ``img_size // 8``) zero padding and horizontal flip. Normalisation uses the
  Fashion-MNIST training-set statistics (mean 0.2860, std 0.3530).
* any other ``--dataset`` is a timm dataset (``create_dataset``: ImageFolder/ImageTar for ``''``, ``torch/cifar100``
  with ``--data-dir``, ``hfds/...``) with timm's ``create_transform`` (``--scale``, ``--hflip``, ``--color-jitter``,
  ``--interpolation``, ``--crop-pct``).

Loaders are plain ``torch.utils.data.DataLoader``: training draws its order with ``RandomSampler`` (global torch
RNG, restored on resume) or ``DistributedSampler`` (``set_epoch``); evaluation is sharded without padding
(``rank::world_size``) so the all-reduced accuracy is exact. BN recalibration reads a fixed, seeded subset of the
*training* images with the deterministic evaluation transform, so recalibration is identical on every rank, on
resume and between the last evaluation and the export.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from shiftaddaug_plugin.data import FashionMNIST

__all__ = ["DataSetup", "FMNIST_MEAN", "FMNIST_STD", "HOLDOUT_SEED", "build_data", "holdout_split",
           "resolve_input_config", "seeded_subset"]

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
EMBEDDED_DATASETS = ("fashion_mnist", "fashion-mnist", "fmnist")


@dataclass
class DataSetup:
    """Everything the trainer needs from the data side."""

    train_loader: DataLoader
    eval_loader: DataLoader
    recal_loader: DataLoader  #: fixed subset of training images, evaluation transform
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_sampler: Any = None  #: DistributedSampler (set_epoch) or None


def is_embedded(name: str) -> bool:
    """True for the embedded offline Fashion-MNIST dataset."""
    return name.lower() in EMBEDDED_DATASETS


def resolve_input_config(args: argparse.Namespace) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...]]:
    """``(C, H, W)``, mean and std from ``--input-size`` / ``--in-chans`` / ``--img-size`` / ``--mean`` / ``--std``
    (defaults: ``(1, 32, 32)`` and Fashion-MNIST statistics for fashion_mnist, ``(3, 224, 224)`` and ImageNet
    statistics otherwise). ``ValueError`` if mean/std do not have one value per channel."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    embedded = is_embedded(args.dataset)
    if args.input_size is not None:
        c, h, w = (int(v) for v in args.input_size)
    else:
        c = args.in_chans or (1 if embedded else 3)
        size = args.img_size or (32 if embedded else 224)
        h = w = int(size)
    if embedded:
        default_mean, default_std = FMNIST_MEAN * c, FMNIST_STD * c
    else:
        default_mean = tuple(IMAGENET_DEFAULT_MEAN) if c == 3 else (float(np.mean(IMAGENET_DEFAULT_MEAN)),) * c
        default_std = tuple(IMAGENET_DEFAULT_STD) if c == 3 else (float(np.mean(IMAGENET_DEFAULT_STD)),) * c
    mean = tuple(args.mean) if args.mean is not None else default_mean
    std = tuple(args.std) if args.std is not None else default_std
    if len(mean) == 1 and c > 1:
        mean = mean * c
    if len(std) == 1 and c > 1:
        std = std * c
    if len(mean) != c or len(std) != c:
        raise ValueError(f"--mean {list(mean)} / --std {list(std)} need one value per input channel ({c}); "
                         "give one value each or C values")
    return (c, h, w), tuple(float(m) for m in mean), tuple(float(s) for s in std)


def seeded_subset(dataset: Dataset, count: int | None, seed: int) -> Dataset:
    """The first ``count`` items of a permutation of ``dataset`` drawn with ``seed`` (whole dataset if ``None``);
    ``ValueError`` if ``count`` exceeds its size."""
    if count is None:
        return dataset
    n = len(dataset)  # type: ignore[arg-type]
    if count > n:
        raise ValueError(f"subset of {count} images requested but the dataset has {n}; use a smaller value")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:count]
    return Subset(dataset, sorted(perm.tolist()))


#: seed of the held-out validation split: one fixed split for every run, so paired runs see the same images
HOLDOUT_SEED = 20240702


def holdout_split(dataset: Dataset, count: int) -> tuple[Dataset, Dataset]:
    """``(rest, held_out)``: ``count`` items of a fixed permutation (:data:`HOLDOUT_SEED`) held out of ``dataset``
    as a validation split, the rest for training; disjoint, and the same for every run."""
    n = len(dataset)  # type: ignore[arg-type]
    if not 1 <= count < n:
        raise ValueError(f"--holdout-val {count}: must lie in [1, {n - 1}] for a training split of {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    return Subset(dataset, sorted(perm[count:])), Subset(dataset, sorted(perm[:count]))


class _Transformed(Dataset):
    """A view of ``base`` with its own transform (so one underlying dataset serves several transforms)."""

    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.base[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def _fmnist_transforms(args: argparse.Namespace, input_size: tuple[int, int, int], mean: Sequence[float],
                       std: Sequence[float]) -> tuple[Any, Any]:
    from torchvision import transforms as T

    c, h, w = input_size
    pad = args.crop_padding if args.crop_padding is not None else max(h, w) // 8
    resize = T.Resize((h, w), interpolation=T.InterpolationMode.BILINEAR)
    common_head: list[Any] = [resize] if (h, w) != (28, 28) else []
    to_chans = [T.Grayscale(num_output_channels=c)] if c != 1 else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train_tf: list[Any] = [*common_head]
    if pad > 0:
        train_tf.append(T.RandomCrop((h, w), padding=pad))
    if args.hflip > 0:
        train_tf.append(T.RandomHorizontalFlip(args.hflip))
    return T.Compose([*train_tf, *to_chans, *tail]), T.Compose([*common_head, *to_chans, *tail])


def _load_fmnist(args: argparse.Namespace, split: str) -> Dataset:

    try:
        return FashionMNIST(root=args.data_dir, split="test" if split == "test" else "train")
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"--dataset fashion_mnist: {err}. On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
            "(or `make dataset`), or pass --data-dir pointing at the idx files") from err


def _timm_datasets(args: argparse.Namespace, input_size: tuple[int, int, int], mean: Sequence[float],
                   std: Sequence[float]) -> tuple[Dataset, Dataset, Dataset, Any, Any]:
    from timm.data import create_dataset, create_transform

    common = dict(root=args.data_dir, class_map=args.class_map, download=args.dataset_download,
                  batch_size=args.batch_size, seed=args.seed,
                  input_img_mode="L" if input_size[0] == 1 else "RGB")
    try:
        train = create_dataset(args.dataset, split=args.train_split, is_training=True, **common)
        val = create_dataset(args.dataset, split=args.val_split, is_training=False, **common)
    except (RuntimeError, FileNotFoundError, OSError, AssertionError) as err:
        raise FileNotFoundError(
            f"--dataset {args.dataset!r} --data-dir {args.data_dir!r}: timm could not open the dataset ({err}); "
            "check --data-dir / --train-split / --val-split (torch/* datasets: add --dataset-download if allowed), or "
            "use --dataset fashion_mnist for the embedded offline data") from err
    for ds in (train, val):
        if isinstance(ds, torch.utils.data.IterableDataset):
            raise ValueError(f"--dataset {args.dataset!r} is iterable/streaming; shiftaddaug-train needs a map-style "
                             "dataset (ImageFolder, ImageTar, torch/*, hfds/*)")
    tf_kwargs: dict[str, Any] = dict(mean=tuple(mean), std=tuple(std))
    if args.interpolation:
        tf_kwargs["interpolation"] = args.interpolation
    train_tf = create_transform(input_size, is_training=True, scale=tuple(args.scale) if args.scale else None,
                                ratio=tuple(args.ratio) if args.ratio else None, hflip=args.hflip,
                                color_jitter=args.color_jitter, **tf_kwargs)
    eval_tf = create_transform(input_size, is_training=False, crop_pct=args.crop_pct, **tf_kwargs)
    # the datasets apply their own .transform: keep them unset and wrap instead (one base, several transforms)
    train.transform = None
    val.transform = None
    return train, val, train, train_tf, eval_tf


def _num_classes(dataset: Dataset, args: argparse.Namespace) -> int:
    if args.num_classes is not None:
        return int(args.num_classes)
    for attr in ("classes",):
        value = getattr(dataset, attr, None)
        if value is not None and len(value) > 0:
            return len(value)
    reader = getattr(dataset, "reader", None)
    class_to_idx = getattr(reader, "class_to_idx", None)
    if class_to_idx:
        return len(class_to_idx)
    raise ValueError(f"cannot infer the number of classes of --dataset {args.dataset!r}; pass --num-classes")


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_data(args: argparse.Namespace, *, rank: int = 0, world_size: int = 1) -> DataSetup:
    """Datasets and loaders for training, evaluation and BN recalibration (module docstring)."""
    input_size, mean, std = resolve_input_config(args)
    if is_embedded(args.dataset):
        train_base, val_base = _load_fmnist(args, "train"), _load_fmnist(args, "test")
        recal_base = train_base
        train_tf, eval_tf = _fmnist_transforms(args, input_size, mean, std)
    else:
        train_base, val_base, recal_base, train_tf, eval_tf = _timm_datasets(args, input_size, mean, std)
    num_classes = _num_classes(train_base, args)

    holdout = getattr(args, "holdout_val", None)
    if holdout is not None:
        train_base, val_base = holdout_split(train_base, holdout)
    train_ds = _Transformed(seeded_subset(train_base, args.train_subset, args.seed), train_tf)
    val_ds = _Transformed(seeded_subset(val_base, args.val_subset, args.seed + 1), eval_tf)
    recal_count = min(args.bn_recal_images, len(train_ds))
    recal_ds = _Transformed(seeded_subset(seeded_subset(train_base, args.train_subset, args.seed), recal_count,
                                          args.seed + 2), eval_tf)
    if len(train_ds) < args.batch_size * world_size:
        raise ValueError(f"{len(train_ds)} training images cannot fill one batch of {args.batch_size} x "
                         f"{world_size} process(es); lower -b/--batch-size or raise --train-subset")

    workers = int(args.workers)
    loader_kw: dict[str, Any] = dict(num_workers=workers, worker_init_fn=_worker_init if workers else None,
                                     persistent_workers=False, pin_memory=False)
    sampler: Any = None
    if world_size > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
        train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=True, **loader_kw)
    else:
        train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=True, **loader_kw)
    eval_bs = args.validation_batch_size or args.batch_size
    eval_shard = Subset(val_ds, list(range(rank, len(val_ds), world_size))) if world_size > 1 else val_ds
    eval_loader = DataLoader(eval_shard, batch_size=eval_bs, shuffle=False, **loader_kw)
    recal_loader = DataLoader(recal_ds, batch_size=min(args.batch_size, max(recal_count, 1)), shuffle=False,
                              **loader_kw)
    return DataSetup(train_loader, eval_loader, recal_loader, num_classes, input_size, mean, std, sampler)
