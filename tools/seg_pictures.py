#!/usr/bin/env python
"""Picture of exported multiplication-free segmentation targets: input, ground truth, and each model's prediction
on the first images of a split (matplotlib; docs/segmentation.md)::

    # runs of tools/reproduce.py (config and --cfg-options read from each run's command.txt)
    python tools/seg_pictures.py --run results/seg-brain-small/runs/seg_brain-mbv2tinyfcn_shift_s0 \\
        --run results/seg-brain-small/runs/seg_brain-mbv2tinyfcn_shiftaug_s0 --out brain.png
    # any exported checkpoint (tools/export_mmseg.py, or the ShiftAddAugHook's iter_N_mf_target.pth)
    python tools/seg_pictures.py --config CONFIG --checkpoint work_dirs/x/iter_2000_mf_target.pth --out x.png

Each prediction column is titled with its label and that model's mIoU over the pictured images.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shlex
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mmseg_tool import ensure_plugin_importable  # noqa: E402

#: reproduce run-name row -> table label (tools/repro/plan.py)
_ROW_LABELS = {"mult": "Mult", "shift": "Shift", "shiftaug": "ShiftAug", "adder": "Add", "add": "Add",
               "addaug": "AddAug", "adderaug": "AddAug"}


@dataclass
class Source:
    """One prediction column: a config, the --cfg-options that made the run, an exported checkpoint, a label."""

    config: str
    options: list[str]
    checkpoint: str
    label: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--run", action="append", default=[], help="a tools/reproduce.py run folder (repeatable)")
    p.add_argument("--config", help="config of --checkpoint")
    p.add_argument("--checkpoint", help="an exported MF target checkpoint (*_mf_target.pth)")
    p.add_argument("--cfg-options", nargs="+", default=[], help="config overrides for --config (key=value ...)")
    p.add_argument("--split", default="test", choices=("val", "test"), help="images from this dataloader")
    p.add_argument("--num", type=int, default=4, help="number of images (rows), default 4")
    p.add_argument("--stride", type=int, default=1, help="take every N-th image of the split (default 1)")
    p.add_argument("--out", required=True, help="PNG to write")
    return p.parse_args(argv)


def source_from_run(run_dir: str) -> Source:
    """Config, options and exported checkpoint of a reproduce run (its ``command.txt``)."""
    command = osp.join(run_dir, "command.txt")
    if not osp.isfile(command):
        raise SystemExit(f"seg_pictures: error: {command} is missing; pass a tools/reproduce.py segmentation run "
                         "folder, or --config/--checkpoint")
    tokens = shlex.split(open(command).read())
    config = next((t for t in tokens if t.endswith(".py") and "configs" in t), None)
    options: list[str] = []
    if "--cfg-options" in tokens:
        for tok in tokens[tokens.index("--cfg-options") + 1:]:
            if tok.startswith("--"):
                break
            options.append(tok)
    targets = sorted((f for f in os.listdir(run_dir) if f.endswith("_mf_target.pth")),
                     key=lambda f: int(f.split("_")[1]) if f.split("_")[1].isdigit() else -1)
    if config is None or not targets:
        raise SystemExit(f"seg_pictures: error: {run_dir} has no config in command.txt or no *_mf_target.pth "
                         "(is the run finished?)")
    name = osp.basename(osp.normpath(run_dir))
    row = name.split("_")[-2] if name.count("_") >= 2 else name
    label = _ROW_LABELS.get(row, row) + (f" (seed {name.split('_s')[-1]})" if "_s" in name else "")
    return Source(config, options, osp.join(run_dir, targets[-1]), label)


def _parse_options(options: list[str]) -> dict[str, Any]:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return parser.parse_args(["--cfg-options", *options]).cfg_options if options else {}


def predict(source: Source, split: str, indices: list[int]) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                      list[np.ndarray], dict[str, Any]]:
    """(inputs, labels, predictions, dataset meta) of ``indices`` of ``split`` with the exported target."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from shiftaddaug_plugin.mmseg_ext.export import build_deploy_model, load_exported

    cfg = Config.fromfile(source.config)
    cfg.merge_from_dict(_parse_options(source.options))
    init_default_scope("mmseg")
    try:
        checkpoint = load_exported(source.checkpoint)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"seg_pictures: error: {err}") from None
    model = build_deploy_model(cfg, checkpoint)
    dataset = DATASETS.build(cfg[f"{split}_dataloader"].dataset)
    if max(indices) >= len(dataset):
        raise SystemExit(f"seg_pictures: error: the {split} split has {len(dataset)} images; lower --num/--stride")
    images, labels, preds = [], [], []
    with torch.no_grad():
        for i in indices:
            sample = dataset[i]
            out = model.test_step(pseudo_collate([sample]))[0]
            images.append(sample["inputs"].permute(1, 2, 0).numpy()[..., ::-1])  # BGR -> RGB
            labels.append(out.gt_sem_seg.data[0].numpy())
            preds.append(out.pred_sem_seg.data[0].numpy())
    return images, labels, preds, dict(dataset.metainfo)


def miou(labels: list[np.ndarray], preds: list[np.ndarray], num_classes: int) -> float:
    """Mean IoU (%) over classes present in the labels or predictions of these images."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for y, p in zip(labels, preds):
        for c in range(num_classes):
            inter[c] += np.sum((y == c) & (p == c))
            union[c] += np.sum((y == c) | (p == c))
    present = union > 0
    return float(100.0 * np.mean(inter[present] / union[present]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = [source_from_run(r) for r in args.run]
    if args.checkpoint or args.config:
        if not (args.checkpoint and args.config):
            raise SystemExit("seg_pictures: error: --config and --checkpoint go together")
        sources.append(Source(args.config, list(args.cfg_options), args.checkpoint,
                              osp.basename(args.checkpoint).replace(".pth", "")))
    if not sources:
        raise SystemExit("seg_pictures: error: give at least one --run, or --config and --checkpoint")
    if args.num < 1 or args.stride < 1:
        raise SystemExit(f"seg_pictures: error: --num={args.num} and --stride={args.stride} must be >= 1")
    ensure_plugin_importable()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    import shiftaddaug_plugin.mmseg_ext  # noqa: F401  (registrations)

    indices = list(range(0, args.num * args.stride, args.stride))
    columns: list[tuple[str, list[np.ndarray]]] = []
    images = labels = None
    meta: dict[str, Any] = {}
    for source in sources:
        images, labels, preds, meta = predict(source, args.split, indices)
        score = miou(labels, preds, len(meta["classes"]))
        columns.append((f"{source.label}\n{score:.1f} mIoU", preds))
        print(f"seg_pictures: {source.label}: {score:.2f} mIoU on {len(indices)} {args.split} images "
              f"({source.checkpoint})")
    assert images is not None and labels is not None
    palette = np.array(meta["palette"], np.uint8)
    ncols = 2 + len(columns)
    fig, axes = plt.subplots(len(indices), ncols, figsize=(1.9 * ncols, 1.9 * len(indices) + 0.6), squeeze=False)
    for r in range(len(indices)):
        cells = [("input", images[r]), ("ground truth", palette[labels[r]])]
        cells += [(title, palette[p[r]]) for title, p in columns]
        for c, (title, picture) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    handles = [Patch(color=np.array(col) / 255.0, label=name)
               for name, col in zip(meta["classes"], meta["palette"])]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"seg_pictures: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
