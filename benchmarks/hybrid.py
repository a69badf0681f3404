"""Hybrid-layer benchmark: HybridConv2d / HybridLinear vs the plain layer of the same output width (docs/algorithms.md
§3).

Usage::

    .venv/bin/python benchmarks/hybrid.py [--quick] [--json PATH] [--rounds R] [--warmup W] [--threads N]
                                          [--width-mult 2.2] [--batch 64] [--size 32]

For every layer shape of ``benchmarks/ops.py`` (batch 64, 32x32; pointwise, depthwise incl. stride 2, dense 3x3)
and two classifier shapes, one forward + backward (input and weight gradients) of

* ``HybridConv2d(op=...)`` in ``Mode.TARGET``: ``Y = MF(X_t)`` on the target widths (the ops.py shape), reference
  ``nn.Conv2d`` of the **target** widths;
* ``HybridConv2d(op=...)`` in ``Mode.AUGMENTED`` at the maximum width (``augmented_width(w, --width-mult)``,
  ``active_out_channels = out_channels``): eq. 4, target part MF + augmented part multiplicative; reference
  ``nn.Conv2d`` of the **augmented** widths. (An input with 3 channels is the image: it is not widened, like the
  stem of a converted model.)
* ``HybridLinear(op=shift)`` likewise (outputs not widened; reference ``nn.Linear`` of the active input width).

Operators: ``mult`` (the NetAug hybrid: slicing/concatenation overhead only), ``shift``, ``adder`` (conv only).
All candidates of a row run in alternating rounds with their reference after warm-up; the adder's first call per
shape compiles and autotunes its kernels (reported as "adder compile s", excluded from the timings: it happens
before the warm-up rounds). Ratios are ratio of medians and, in brackets, ratio of minimums.

No speed targets are set for the hybrid layers by docs/algorithms.md §2; for orientation, the operators alone (ops.py)
aim at adder <= 1.5x (depthwise) / 4x (pointwise) / 5x (dense), shift <= 1.3x. In ``Mode.AUGMENTED`` the MF part is
only the target slice, so the ratios should lie well below the operator ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (  # noqa: E402
    Stats,
    add_common_args,
    alternating_rounds,
    calibrate_inner,
    fmt_ratio,
    fwd_bwd_step,
    machine_info,
    markdown_table,
    ratios,
    resolve_common_args,
    summarize,
    uptime,
    write_json,
)
from ops import QUICK as OPS_QUICK  # noqa: E402
from ops import SHAPES as OPS_SHAPES  # noqa: E402
from ops import LayerShape  # noqa: E402

from shiftaddaug_plugin.convert.config import augmented_width  # noqa: E402
from shiftaddaug_plugin.layers import HybridConv2d, HybridLinear  # noqa: E402
from shiftaddaug_plugin.modes import Mode  # noqa: E402

CONV_OPS = ("mult", "shift", "adder")
LINEAR_OPS = ("mult", "shift")
IMAGE_CHANNELS = 3  #: inputs this narrow are images: never widened


@dataclass(frozen=True)
class LinearShape:
    name: str
    cin: int
    cout: int


LINEAR_SHAPES = [LinearShape("fc 448->10 (mbv2-tiny head)", 448, 10), LinearShape("fc 160->10 (mcunet head)", 160, 10)]
QUICK_LINEAR = ["fc 448->10 (mbv2-tiny head)"]


@dataclass
class Row:
    shape: str
    kind: str
    mode: str
    in_channels: int
    out_channels: int
    ref_ms: float
    ms: Dict[str, float]  #: per op: median ms
    ratio: Dict[str, float]  #: per op: ratio of medians to the reference
    ratio_min: Dict[str, float]  #: per op: ratio of minimums
    stats: Dict[str, Stats]  #: 'ref' and every op
    inner: int
    adder_compile_s: Optional[float]
    size: int = 0  #: input height = width


def _widths(shape: LayerShape, mult: float) -> tuple[int, int]:
    cin = shape.cin if shape.cin <= IMAGE_CHANNELS else augmented_width(shape.cin, mult)
    cout = augmented_width(shape.cout, mult)
    if shape.kind == "depthwise":
        cin = cout = augmented_width(shape.cin, mult)
    return cin, cout


def _row(name: str, kind: str, mode: Mode, cin: int, cout: int, fns: Dict[str, Callable[[], None]], rounds: int,
         warmup: int, min_round_s: float, compile_s: Optional[float], size: int = 0) -> Row:
    inner = calibrate_inner(fns["ref"], min_round_s)
    times = alternating_rounds(fns, rounds, warmup, inner)
    ops = [k for k in fns if k != "ref"]
    rs = {op: ratios(times, op, "ref") for op in ops}
    stats = {k: summarize(v, inner) for k, v in times.items()}
    return Row(shape=name, kind=kind, mode=mode.value, in_channels=cin, out_channels=cout,
               ref_ms=stats["ref"].median_ms, ms={op: stats[op].median_ms for op in ops},
               ratio={op: rs[op]["median"] for op in ops}, ratio_min={op: rs[op]["min"] for op in ops},
               stats=stats, inner=inner, adder_compile_s=compile_s, size=size)


def bench_conv_shape(shape: LayerShape, width_mult: float, batch: int, size: int, rounds: int, warmup: int,
                     min_round_s: float) -> List[Row]:
    """Two rows (TARGET, AUGMENTED) for one ops.py conv shape."""
    torch.manual_seed(0)
    aug_in, aug_out = _widths(shape, width_mult)
    depthwise = shape.kind == "depthwise"
    hybrids = {
        op: HybridConv2d(aug_in, aug_out, shape.k, shape.stride, shape.padding, groups=aug_in if depthwise else 1,
                         bias=False, target_in_channels=shape.cin, target_out_channels=shape.cout, op=op)
        for op in CONV_OPS
    }
    rows: List[Row] = []
    compile_s: Optional[float] = None
    for mode, cin, cout in ((Mode.TARGET, shape.cin, shape.cout), (Mode.AUGMENTED, aug_in, aug_out)):
        ref = nn.Conv2d(cin, cout, shape.k, shape.stride, shape.padding, groups=cin if depthwise else 1, bias=False)
        side = shape.input_size(size)  # the late-stage shapes (``@HxW``) have their own spatial size
        x = torch.randn(batch, cin, side, side, requires_grad=True)
        with torch.no_grad():
            grad = torch.randn_like(ref(x))
        fns: Dict[str, Callable[[], None]] = {"ref": fwd_bwd_step(ref, x, grad)}
        for op, layer in hybrids.items():
            layer.mode = mode
            layer.active_out_channels = layer.out_channels
            fns[op] = fwd_bwd_step(layer, x, grad)
        if compile_s is None:
            start = time.perf_counter()
            fns["adder"]()  # compiles + autotunes the adder kernels of this (target) shape
            compile_s = time.perf_counter() - start
        rows.append(_row(shape.name, shape.kind, mode, cin, cout, fns, rounds, warmup, min_round_s,
                         compile_s if mode == Mode.TARGET else None, side))
        print(f"#   done {shape.name} {mode.value}", file=sys.stderr, flush=True)
    return rows


def bench_linear_shape(shape: LinearShape, width_mult: float, batch: int, rounds: int, warmup: int,
                       min_round_s: float) -> List[Row]:
    """Two rows (TARGET, AUGMENTED) for one classifier shape."""
    torch.manual_seed(0)
    aug_in = augmented_width(shape.cin, width_mult)
    hybrids = {op: HybridLinear(aug_in, shape.cout, target_in_features=shape.cin, op=op) for op in LINEAR_OPS}
    rows: List[Row] = []
    for mode, cin in ((Mode.TARGET, shape.cin), (Mode.AUGMENTED, aug_in)):
        ref = nn.Linear(cin, shape.cout)
        x = torch.randn(batch, cin, requires_grad=True)
        grad = torch.randn(batch, shape.cout)
        fns: Dict[str, Callable[[], None]] = {"ref": fwd_bwd_step(ref, x, grad)}
        for op, layer in hybrids.items():
            layer.mode = mode
            fns[op] = fwd_bwd_step(layer, x, grad)
        rows.append(_row(shape.name, "linear", mode, cin, shape.cout, fns, rounds, warmup, min_round_s, None))
        print(f"#   done {shape.name} {mode.value}", file=sys.stderr, flush=True)
    return rows


def render(rows: List[Row]) -> str:
    header = ["shape", "mode", "in->out", "ref ms"]
    for op in CONV_OPS:
        header += [f"{op} ms", f"{op}/ref (min)"]
    header += ["adder compile s", "spread ref/shift/adder", "calls/round"]
    body = []
    for r in rows:
        cells = [r.shape, r.mode, f"{r.in_channels}->{r.out_channels}", f"{r.ref_ms:.2f}"]
        for op in CONV_OPS:
            if op in r.ms:
                cells += [f"{r.ms[op]:.2f}", f"{fmt_ratio(r.ratio[op])} ({fmt_ratio(r.ratio_min[op])})"]
            else:
                cells += ["n/a", "n/a"]
        cells.append("" if r.adder_compile_s is None else f"{r.adder_compile_s:.1f}")
        cells.append("/".join(f"{r.stats[k].spread:.0%}" for k in ("ref", "shift", "adder") if k in r.stats))
        cells.append(str(r.inner))
        body.append(cells)
    return markdown_table(header, body)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "hybrid", rounds=15, quick_rounds=5, warmup=2)
    parser.add_argument("--width-mult", type=float, default=2.2,
                        help="augmented (maximum) width multiplier for Mode.AUGMENTED (default 2.2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--min-round-ms", type=float, default=20.0,
                        help="repeat calls within a round until the reference takes this long (default 20 ms)")
    args = parser.parse_args(argv)
    rounds, warmup = resolve_common_args(parser, args, rounds=15, quick_rounds=5, warmup=2)
    if args.width_mult < 1.0:
        parser.error(f"--width-mult must be >= 1.0 (1.0 = no augmentation), got {args.width_mult}")
    if args.batch < 1 or args.size < 4:
        parser.error("--batch must be >= 1 and --size >= 4")
    conv_shapes = [s for s in OPS_SHAPES if not args.quick or s.name in OPS_QUICK]
    linear_shapes = [s for s in LINEAR_SHAPES if not args.quick or s.name in QUICK_LINEAR]
    load_before = uptime()
    print(f"# Hybrid layers vs plain layer of the same output width, fwd+bwd, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.threads} threads, augmented width x{args.width_mult}, "
          f"median of {rounds} alternating rounds after {warmup} warm-up rounds")
    print(f"# machine: {load_before}")
    rows: List[Row] = []
    min_round_s = args.min_round_ms / 1e3
    for shape in conv_shapes:
        rows += bench_conv_shape(shape, args.width_mult, args.batch, args.size, rounds, warmup, min_round_s)
    for lshape in linear_shapes:
        rows += bench_linear_shape(lshape, args.width_mult, args.batch, rounds, warmup, min_round_s)
    load_after = uptime()
    print(render(rows))
    print("\nratio = median(op) / median(ref) per call, (min) = fastest round / fastest round. ref = nn.Conv2d / "
          "nn.Linear of the layer's output width in that mode (target widths in TARGET, augmented widths in "
          "AUGMENTED). spread = (p90 - p10) / median of the per-round times. Linear layers have no adder variant.")
    print(f"# machine after: {load_after}")
    write_json(args.json, {
        "benchmark": "hybrid", "batch": args.batch, "size": args.size, "width_mult": args.width_mult,
        "rounds": rounds, "warmup": warmup, "quick": args.quick, "load_before": load_before,
        "load_after": load_after, "loadavg_after": os.getloadavg(), "machine": machine_info(args.threads),
        "rows": rows,
    })
    print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
