"""Integer inference of an exported shift model: bit-exactness and throughput (docs/algorithms.md §1 eval path).

Usage::

    .venv/bin/python benchmarks/integer_inference.py [--quick] [--json PATH] [--rounds R] [--warmup W]
                                                     [--threads N] [--model shiftadd_mbv2_tiny] [--batch 64]

The model is the registered slim shift network ``timm.create_model(name, op='shift', num_classes=10, in_chans=3)``
(= ``export(convert(plain, ConvertConfig(op='shift', no augmentation)))``: every conv but the stem and the classifier
are ``ShiftConv2d`` / ``ShiftLinear``), its BatchNorm statistics set by a few training-mode passes on random
32x32 images, then ``eval()``.

1. **Bit-exactness.** The integer path (every shift layer's ``forward`` replaced by ``integer_forward``, i.e.
   ``shift_conv2d_integer`` / ``shift_linear_integer``: ``Y = Σ ±(X_int << P)`` in int64, one final power-of-two
   scaling) must give exactly the logits of the float path computed in float64 (model and input in float64). Checked
   per shift layer (on the layer's actual input, via forward hooks) and on the final logits; ``torch.equal`` is
   asserted and the result printed. A ``ValueError`` is raised on any mismatch.
2. **Throughput.** Batch ``--batch`` inference in float32: float path vs integer path (the usual float32 model is the
   reference), alternating rounds after warm-up; also the float64 float path for context. Two integer executors:
   the int64 reference (one kernel tap at a time, memory-bounded; much slower than the float path) and the fast
   executor (``shift_conv2d_integer_fast``: the same integer accumulator as one float64 conv of the exact integer
   operands, bit-identical whenever ``|acc| < 2^53``, else the reference; asserted equal on the logits). The fast
   executor cannot beat the float64 float path, whose cost against float32 is printed next to it: that ratio is
   the floor of any exact (> 24-bit mantissa) accumulation with this CPU's BLAS.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (  # noqa: E402
    Stats,
    add_common_args,
    alternating_rounds,
    machine_info,
    markdown_table,
    ratios,
    resolve_common_args,
    summarize,
    uptime,
    write_json,
)

from shiftaddaug_plugin.layers import ShiftConv2d, ShiftLinear  # noqa: E402

SHIFT_LAYERS = (ShiftConv2d, ShiftLinear)


@dataclass
class ExactnessReport:
    shift_layers: int
    layers_bit_exact: int
    logits_bit_exact: bool
    max_abs_diff_logits: float
    nonzero_fixed_point_inputs: float  #: fraction of non-zero X_int over all shift layers (the check is not vacuous)
    other_convs: int  #: multiplicative convs left in the model (the stem)


@dataclass
class Result:
    model: str
    batch: int
    exactness: ExactnessReport
    stats: Dict[str, Stats]
    int_over_float32_time: Dict[str, float]  #: ratio of medians / minimums of the per-batch time
    float32_over_int_throughput: Dict[str, float]  #: the same, as images/s of integer over float32 (inverse)
    float64_over_float32_time: Dict[str, float]
    fast_int_over_float32_time: Dict[str, float]  #: the fast executor (float64 conv of the integer operands)


@contextmanager
def integer_path(model: nn.Module, reference: bool = False) -> Iterator[int]:
    """Inside the block every ``ShiftConv2d`` / ``ShiftLinear`` of ``model`` runs ``integer_forward`` (the fast
    executor, or with ``reference`` the int64 reference)."""
    layers = [m for m in model.modules() if isinstance(m, SHIFT_LAYERS)]
    for m in layers:
        m.forward = functools.partial(m.integer_forward, reference=reference)  # shadows the class's float forward
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward


def build_model(name: str, num_classes: int, in_chans: int, size: int, calib_batches: int, seed: int) -> nn.Module:
    import timm

    import shiftaddaug_plugin.models  # noqa: F401 - registers the shiftadd_* models

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, op="shift")
    model.train()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(calib_batches):  # realistic BN statistics: activations of order 1, not vanishing
            model(torch.randn(32, in_chans, size, size, generator=g))
    return model.eval()


def check_exactness(model: nn.Module, x: torch.Tensor) -> ExactnessReport:
    """Float path in float64 vs integer path, per shift layer and on the logits (docs/algorithms.md §1: bit-exact)."""
    from shiftaddaug_plugin.functional.shift import input_to_fixed_point_int

    m64 = model.double()
    x64 = x.double()
    inputs: Dict[str, torch.Tensor] = {}
    names = {m: n for n, m in m64.named_modules() if isinstance(m, SHIFT_LAYERS)}

    def capture(module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        inputs[names[module]] = args[0].detach()

    handles = [m.register_forward_hook(capture) for m in names]
    try:
        with torch.no_grad():
            y_float = m64(x64)
    finally:
        for h in handles:
            h.remove()
    exact_layers, nonzero, total = 0, 0, 0
    with torch.no_grad():
        for module, name in names.items():
            xi = inputs[name]
            y = module(xi)
            reference, fast = module.integer_forward(xi, reference=True), module.integer_forward(xi)
            if torch.equal(y, reference) and torch.equal(y, fast):
                exact_layers += 1
            x_int = input_to_fixed_point_int(xi, module.quant_config)
            nonzero += int((x_int != 0).sum())
            total += x_int.numel()
        with integer_path(m64, reference=True):
            y_int = m64(x64)
        with integer_path(m64):
            y_fast = m64(x64)
        if not torch.equal(y_int, y_fast):
            raise ValueError("the fast integer executor differs from the int64 reference on the logits")
    model.float()
    other = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and not isinstance(m, SHIFT_LAYERS))
    return ExactnessReport(len(names), exact_layers, bool(torch.equal(y_float, y_int)),
                           float((y_float - y_int).abs().max()), nonzero / max(total, 1), other)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "integer_inference", rounds=7, quick_rounds=3, warmup=1)
    parser.add_argument("--model", default="shiftadd_mbv2_tiny", help="registered shiftadd_* model")
    parser.add_argument("--batch", type=int, default=None, help="inference batch (default 64; --quick 8)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3, choices=(1, 3))
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--calib-batches", type=int, default=4, help="training-mode passes that set BN statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds, warmup = resolve_common_args(parser, args, rounds=7, quick_rounds=3, warmup=1)
    batch = args.batch if args.batch is not None else (8 if args.quick else 64)
    if batch < 1 or args.size < 8 or args.num_classes < 2 or args.calib_batches < 1:
        parser.error("need --batch >= 1, --size >= 8, --num-classes >= 2, --calib-batches >= 1")
    load_before = uptime()
    print(f"# Integer vs float inference of the exported shift {args.model}, batch {batch}, "
          f"{args.in_chans}x{args.size}x{args.size}, {args.threads} threads, median of {rounds} alternating rounds "
          f"after {warmup} warm-up round(s)")
    print(f"# machine: {load_before}")
    model = build_model(args.model, args.num_classes, args.in_chans, args.size, args.calib_batches, args.seed)
    x = torch.randn(batch, args.in_chans, args.size, args.size, generator=torch.Generator().manual_seed(args.seed + 2))

    rep = check_exactness(model, x)
    print(f"\nbit-exact (integer path vs float path in float64): {rep.layers_bit_exact}/{rep.shift_layers} shift "
          f"layers, logits {'identical' if rep.logits_bit_exact else 'DIFFERENT'} (max |diff| "
          f"{rep.max_abs_diff_logits:.3g}); {rep.nonzero_fixed_point_inputs:.1%} of the fixed-point inputs are "
          f"non-zero; {rep.other_convs} multiplicative conv(s) left (stem)")
    if not (rep.logits_bit_exact and rep.layers_bit_exact == rep.shift_layers):
        raise ValueError("integer shift path is not bit-exact to the float64 float path (docs/algorithms.md §1); see "
                         "the "
                         "per-layer count above and tests of functional/shift.py")

    model64 = copy.deepcopy(model).double()
    x64 = x.double()

    def float32_step() -> None:
        with torch.no_grad():
            model(x)

    def integer_step() -> None:
        with torch.no_grad(), integer_path(model, reference=True):
            model(x)

    def fast_integer_step() -> None:
        with torch.no_grad(), integer_path(model):
            model(x)

    def float64_step() -> None:
        with torch.no_grad():
            model64(x64)

    times = alternating_rounds({"float32": float32_step, "integer": integer_step, "integer_fast": fast_integer_step,
                                "float64": float64_step}, rounds, warmup)
    stats = {k: summarize(v) for k, v in times.items()}
    r_int = ratios(times, "integer", "float32")
    result = Result(args.model, batch, rep, stats, r_int, {k: 1.0 / v for k, v in r_int.items()},
                    ratios(times, "float64", "float32"), ratios(times, "integer_fast", "float32"))
    rows = []
    for name, label in (("float32", "float path, float32 (reference)"), ("float64", "float path, float64"),
                        ("integer", "integer path, int64 reference (shifts + adds)"),
                        ("integer_fast", "integer path, fast executor (bit-identical)")):
        s = stats[name]
        r = ratios(times, name, "float32")
        rows.append([label, f"{s.median_ms:.1f}", f"{s.min_ms:.1f}", f"{batch / s.median_ms * 1e3:.0f}",
                     f"{r['median']:.2f}x ({r['min']:.2f}x)", f"{s.spread:.0%}"])
    print()
    print(markdown_table(["path", "ms/batch", "min ms", "images/s", "time vs float32 (min)", "spread"], rows))
    print(f"\nthroughput integer / float32 = {result.float32_over_int_throughput['median']:.4f} "
          f"(the int64 reference is {r_int['median']:.1f}x slower, per-tap tensor ops); fast executor "
          f"{result.fast_int_over_float32_time['median']:.2f}x float32 (float64 GEMM of the exact integers: "
          f"float64 alone costs {result.float64_over_float32_time['median']:.2f}x here)")
    load_after = uptime()
    print(f"# machine after: {load_after}")
    write_json(args.json, {
        "benchmark": "integer_inference", "size": args.size, "in_chans": args.in_chans,
        "num_classes": args.num_classes, "rounds": rounds, "warmup": warmup, "quick": args.quick,
        "load_before": load_before, "load_after": load_after, "loadavg_after": os.getloadavg(),
        "machine": machine_info(args.threads), "result": result,
    })
    print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
