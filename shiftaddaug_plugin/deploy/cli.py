"""``shiftaddaug-export``: an exported MF target (``exported_target.pth`` + ``.json`` from ``shiftaddaug-train``) to
ONNX, checked against PyTorch in ONNX Runtime and audited for hidden multiplications (docs/deploy.md).

    shiftaddaug-export runs/demo/shiftaddaug/exported_target.pth --onnx mcunet_shift.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..train.checkpoint import load_exported
from .onnx_export import export_onnx
from .verify import check_onnx

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shiftaddaug-export", description=__doc__.split("\n\n")[0])
    p.add_argument("exported", help="exported_target.pth written by shiftaddaug-train (its .json must sit next to it)")
    p.add_argument("--onnx", required=True, metavar="OUT", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 11 to 20 (default 17)")
    p.add_argument("--batch", type=int, default=4, help="batch size of the parity check (default 4)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check and the audit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        model, meta = load_exported(args.exported)
        x = torch.randn(max(1, args.batch), *meta["input_size"], generator=torch.Generator().manual_seed(0))
        print(f"exporting {meta.get('model')} ({args.exported}) to ONNX opset {args.opset} ...", flush=True)
        out = export_onnx(model, args.onnx, x, opset=args.opset,
                          metadata={"shiftaddaug.source": {k: meta.get(k) for k in ("model", "model_kwargs",
                                                                                     "input_size", "num_classes",
                                                                                     "mean", "std")}})
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"shiftaddaug-export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({Path(out).stat().st_size / 1024:.0f} KB)")
    if args.no_check:
        return 0
    print(f"checking in ONNX Runtime on a batch of {x.shape[0]} and auditing the graph ...", flush=True)
    try:
        print(check_onnx(model, out, x).format())
    except ValueError as err:  # a hidden multiplication: the file is written, but not what it promises
        print(f"shiftaddaug-export: error: {err}", file=sys.stderr)
        return 1
    return 0
