#!/usr/bin/env python3
"""What a channel sort does to the multiplication-free operators of a trained checkpoint (docs/weight_sharing.md §3).

    python tools/sort_diagnostics.py results/select-small/runs/mcunet_addaug_s0/last.pth.tar --op adder

Loads a ``shiftaddaug-train`` checkpoint of ``shiftadd_mcunet`` / ``shiftadd_mbv2_tiny``, takes a fixed batch of
Fashion-MNIST training images (evaluation transform) and prints, averaged over the MF layers, mean |w|, excess
kurtosis, output-channel correlation and the target network's loss / accuracy on the batch, for the model as it is
and after a sort into the target with and without the eq. 5 quantile-matching remap. ``--json`` writes the full
per-layer result. The checkpoint is only read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="last.pth.tar / model_best.pth.tar of shiftaddaug-train")
    p.add_argument("--model", default="shiftadd_mcunet")
    p.add_argument("--op", default="adder", choices=("shift", "adder", "shiftadd"))
    p.add_argument("--aug-width-mult-list", type=float, nargs="+", default=[1.0, 1.6, 2.2])
    p.add_argument("--scope", default="all", choices=("all", "augmented"))
    p.add_argument("--images", type=int, default=256, help="batch of training images (default 256)")
    p.add_argument("--json", default="", help="write the full result here")
    args = p.parse_args(argv)
    import timm

    import shiftaddaug_plugin  # noqa: F401 - registers the models
    from shiftaddaug_plugin.convert.diagnostics import sort_diagnostics
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.checkpoint import load_checkpoint
    from shiftaddaug_plugin.train.data import build_data

    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"sort_diagnostics: error: cannot read {args.checkpoint}: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model = timm.create_model(args.model, aug=True, op=args.op, num_classes=10, in_chans=1,
                              aug_width_mult_list=args.aug_width_mult_list)
    model.load_state_dict(ckpt["state_dict"])
    data = build_data(parse_args(["--train-subset", str(max(args.images, 64)), "--bn-recal-images",
                                  str(args.images), "-b", str(args.images), "--workers", "0"]))
    images, targets = next(iter(data.recal_loader))
    diag = sort_diagnostics(model, images, targets, scope=args.scope)
    print(f"{args.checkpoint} (epoch {ckpt.get('epoch')}, op {args.op}, scope {args.scope}, {len(images)} images)")
    print(f"{'':18s} {'loss':>7s} {'acc %':>6s} {'mean|w|':>8s} {'kurt':>6s} {'corr':>6s} {'moved':>6s}")
    for key in ("before", "sorted_remap", "sorted_no_remap"):
        d = diag[key]
        print(f"{key:18s} {d['target_loss']:7.3f} {d['target_acc']:6.1f} {d['mean_abs']:8.3f} {d['kurtosis']:6.2f} "
              f"{d['channel_corr']:6.3f} {d.get('channels_moved', 0):6d}")
    if args.json:
        Path(args.json).write_text(json.dumps(diag, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
