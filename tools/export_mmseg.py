#!/usr/bin/env python
"""Turn a ShiftAddAug MMSegmentation training checkpoint into the exported MF target checkpoint, and print its
operator counts (multiplications / shifts / additions, energy; docs/algorithms.md §8); with ``--onnx`` also write it
as an ONNX model, checked in ONNX Runtime and audited for hidden multiplications (docs/deploy.md)::

    python tools/export_mmseg.py CONFIG work_dirs/x/iter_400.pth [--out PATH] [--recalib-images N]
        [--input-size H W] [--counts-json PATH] [--onnx OUT.onnx] [--cfg-options k=v ...]
    python tools/export_mmseg.py CONFIG work_dirs/x/iter_400_mf_target.pth --onnx OUT.onnx   # already exported

BN statistics are recalibrated on ``--recalib-images`` training images first (default: the ShiftAddAugHook's
setting in the config, with its seed, so the result equals the hook's own export); ``--recalib-images 0`` keeps
the statistics stored in the checkpoint. Evaluate the result with ``tools/test_mmseg.py CONFIG OUT``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training config (model.type='ShiftAddAugEncoderDecoder')")
    parser.add_argument("checkpoint", help="training checkpoint (iter_N.pth)")
    parser.add_argument("--out", help="exported checkpoint (default: <checkpoint>_mf_target.pth)")
    parser.add_argument("--recalib-images", type=int, default=None,
                        help="training images for BN recalibration (default: the hook's; 0: keep the stored stats)")
    parser.add_argument("--recalib-seed", type=int, default=None, help="recalibration seed (default: the hook's)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="image size for the operator counts (default: model.example_input_shape)")
    parser.add_argument("--per-layer", action="store_true", help="print the per-layer operator table too")
    parser.add_argument("--counts-json", help="also write the operator counts as JSON here")
    parser.add_argument("--onnx", metavar="OUT", help="also write the exported target as ONNX (logits at the input "
                        "size), check it in ONNX Runtime and audit it")
    parser.add_argument("--onnx-batch", type=int, default=2, help="batch size of the ONNX parity check (default 2)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings")
    return parser.parse_args(argv)


def _hook_cfg(cfg: Any) -> dict[str, Any]:
    for hook in cfg.get("custom_hooks", None) or []:
        if hook.get("type") == "ShiftAddAugHook":
            return dict(hook)
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import shiftaddaug_plugin.mmseg_ext  # noqa: F401  (registrations)
    from shiftaddaug_plugin.mmseg_ext.export import (
        build_deploy_model,
        export_checkpoint_path,
        is_exported_checkpoint,
        load_exported,
        save_exported,
    )
    from shiftaddaug_plugin.mmseg_ext.hook import build_recalib_loader, recalibrate_segmentor
    from shiftaddaug_plugin.train.checkpoint import safe_load

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    if cfg.model.get("type") != "ShiftAddAugEncoderDecoder" or cfg.model.get("deploy", False):
        raise SystemExit(f"{args.config}: model.type must be 'ShiftAddAugEncoderDecoder' (not deploy) to export")
    model = MODELS.build(cfg.model)
    try:  # weights only: a checkpoint that holds Python objects is refused, never executed
        checkpoint = safe_load(args.checkpoint, "checkpoint", "pass an mmengine training checkpoint "
                               "(<work_dir>/iter_N.pth)")
    except ValueError as err:
        raise SystemExit(f"export_mmseg: error: {err}") from None
    if "state_dict" not in checkpoint:
        raise SystemExit(f"{args.checkpoint} has no 'state_dict'; pass an mmengine training checkpoint")
    if is_exported_checkpoint(checkpoint):  # already exported: counts and ONNX only
        deploy = build_deploy_model(cfg, checkpoint)
        return _report(args, deploy, model.example_input_shape)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    meta = checkpoint.get("meta") or {}

    hook = _hook_cfg(cfg)
    num_images = args.recalib_images if args.recalib_images is not None else hook.get("recalib_images", 2000)
    seed = args.recalib_seed if args.recalib_seed is not None else hook.get("recalib_seed", 0)
    if num_images < 0:
        raise SystemExit("--recalib-images must be >= 0")
    if num_images > 0:
        loader = build_recalib_loader(cfg.train_dataloader, seed, hook.get("recalib_batch_size"))
        recalibrate_segmentor(model, loader, num_images, seed)
        print(f"recalibrated BN statistics on {num_images} training images (seed {seed})")
    out = args.out or export_checkpoint_path(args.checkpoint)
    save_exported(model, out, source_checkpoint=args.checkpoint, iteration=meta.get("iter"),
                  dataset_meta=meta.get("dataset_meta"))
    print(f"exported MF target: {out}")

    return _report(args, build_deploy_model(cfg, load_exported(out)), model.example_input_shape)


def _report(args: argparse.Namespace, deploy: Any, shape: Any) -> int:
    """Operator counts of the deploy model, and its ONNX file with ``--onnx``."""
    import torch

    from shiftaddaug_plugin.cost import count_ops
    from shiftaddaug_plugin.cost.report import format_report

    size = tuple(args.input_size) if args.input_size else tuple(shape[2:])
    report = count_ops(deploy, input_shape=(shape[1], *size))
    print(f"operator counts at {shape[1]}x{size[0]}x{size[1]}:")
    print(format_report(report, "text", per_layer=args.per_layer))
    if args.counts_json:
        with open(args.counts_json, "w") as f:
            json.dump(report.to_dict(), f, indent=1, default=str)
        print(f"counts written to {args.counts_json}")
    if args.onnx:
        from shiftaddaug_plugin.deploy.segmentor_onnx import export_segmentor_onnx
        from shiftaddaug_plugin.deploy.verify import check_onnx

        x = torch.randn(max(1, args.onnx_batch), shape[1], *size, generator=torch.Generator().manual_seed(0))
        print(f"exporting to ONNX at {shape[1]}x{size[0]}x{size[1]} ...", flush=True)
        path, net = export_segmentor_onnx(deploy, args.onnx, x, metadata={"shiftaddaug.config": args.config})
        print(f"wrote {path}; checking in ONNX Runtime and auditing the graph ...", flush=True)
        try:
            print(check_onnx(net, path, x).format("per-pixel label"))
        except ValueError as err:
            raise SystemExit(f"export_mmseg: error: {err}") from None
    return 0


if __name__ == "__main__":
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from _mmseg_tool import ensure_plugin_importable

    ensure_plugin_importable()
    sys.exit(main())
