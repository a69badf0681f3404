"""Operator benchmark: AdderConv2d and ShiftConv2d vs F.conv2d, forward + backward (docs/algorithms.md §2).

Usage::

    .venv/bin/python benchmarks/ops.py [--quick] [--json out.json] [--repeats R] [--batch B]

For each layer shape (batch 64, 32x32 inputs: pointwise 32-96 channels, depthwise 3x3 32-192 channels incl.
stride 2, dense 3x3 16-64 channels; plus the late-stage shapes at 8x8 ... 1x1, named ``@HxW``) it
measures, in one process with ``torch.set_num_threads(2)``:

* time: one forward + backward (input and weight gradients) per call; the operators are run *alternately*
  (conv, adder, shift, conv, adder, shift, ...) after a warm-up, so machine-load drift hits all of them alike;
  the ratio of medians and the ratio of minimums over the rounds are reported (on a shared machine the minimum
  is the least disturbed estimate; the spread column shows how noisy the rounds were). The adder's first call compiles
  and autotunes its kernels for the
  shape; that one-off cost is reported separately ("compile s").
* peak extra memory: the peak of live bytes of the c10 CPU allocator during one forward + backward, above what
  was live before the call (torch.profiler ``profile_memory=True``: the allocator's ``[memory]`` events are
  replayed in time order). It includes the output and the gradients, and every buffer the inductor kernels
  allocate; it does not see oneDNN-internal scratch memory that bypasses the c10 allocator.

Targets (docs/algorithms.md §2): adder depthwise <= 1.5x, pointwise <= 4x, dense 3x3 <= 5x, no shape > 10x; memory
<= 3x conv's and <= 256 MB per layer; ShiftConv2d <= 1.3x.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _timing module

from _timing import fwd_bwd_step  # noqa: E402

from shiftaddaug_plugin.functional import adder as adder_functional  # noqa: E402
from shiftaddaug_plugin.layers.adder import AdderConv2d  # noqa: E402

_SHIFT_FILE = Path(__file__).resolve().parents[1] / "shiftaddaug_plugin" / "layers" / "shift.py"


@dataclass(frozen=True)
class LayerShape:
    name: str
    kind: str  # 'pointwise' | 'depthwise' | 'dense'
    cin: int
    cout: int
    k: int
    stride: int
    groups: int
    size: Optional[int] = None  # input height = width; None: the --size argument (32)

    @property
    def padding(self) -> int:
        return self.k // 2

    def input_size(self, default: int) -> int:
        return self.size if self.size is not None else default


SHAPES: List[LayerShape] = [
    LayerShape("pw 32->96", "pointwise", 32, 96, 1, 1, 1),
    LayerShape("pw 96->32", "pointwise", 96, 32, 1, 1, 1),
    LayerShape("pw 96->96", "pointwise", 96, 96, 1, 1, 1),
    LayerShape("dw3x3 32", "depthwise", 32, 32, 3, 1, 32),
    LayerShape("dw3x3 96", "depthwise", 96, 96, 3, 1, 96),
    LayerShape("dw3x3 96 s2", "depthwise", 96, 96, 3, 2, 96),
    LayerShape("dw3x3 192", "depthwise", 192, 192, 3, 1, 192),
    LayerShape("dw3x3 192 s2", "depthwise", 192, 192, 3, 2, 192),
    LayerShape("conv3x3 16->16", "dense", 16, 16, 3, 1, 1),
    LayerShape("conv3x3 32->32", "dense", 32, 32, 3, 1, 1),
    LayerShape("conv3x3 64->64", "dense", 64, 64, 3, 1, 1),
    LayerShape("conv3x3 3->16 s2", "dense", 3, 16, 3, 2, 1),
    # late-stage shapes of MCUNet / MobileNetV2-Tiny at 32 px input (stride 8 ... 32): few pixels, many channels,
    # next to the global pool; here per-call overhead, not arithmetic, decides the ratio to conv
    LayerShape("dw3x3 192 @8x8", "depthwise", 192, 192, 3, 1, 192, 8),
    LayerShape("pw 96->576 @4x4", "pointwise", 96, 576, 1, 1, 1, 4),
    LayerShape("dw3x3 576 @4x4", "depthwise", 576, 576, 3, 1, 576, 4),
    LayerShape("pw 480->160 @2x2", "pointwise", 480, 160, 1, 1, 1, 2),
    LayerShape("dw3x3 480 s2 @2x2", "depthwise", 480, 480, 3, 2, 480, 2),
    LayerShape("pw 320->1280 @1x1", "pointwise", 320, 1280, 1, 1, 1, 1),
]
QUICK = ["pw 32->96", "dw3x3 96", "dw3x3 96 s2", "conv3x3 32->32", "dw3x3 576 @4x4", "pw 320->1280 @1x1"]

TIME_TARGET = {"depthwise": 1.5, "pointwise": 4.0, "dense": 5.0}
SHIFT_TARGET = 1.3
MEM_RATIO_TARGET, MEM_ABS_TARGET_MB = 3.0, 256.0


@dataclass
class Row:
    shape: str
    kind: str
    conv_ms: float
    adder_ms: float
    adder_ratio: float
    adder_ratio_min: float
    shift_ms: Optional[float]
    shift_ratio: Optional[float]
    shift_ratio_min: Optional[float]
    conv_mb: float
    adder_mb: float
    adder_mem_ratio: float
    shift_mb: Optional[float]
    compile_s: float
    formulation: str
    spread: Dict[str, float]  # (p90 - p10) / median of the per-round times, per operator


def _load_shift_conv() -> Optional[type]:
    if not _SHIFT_FILE.exists():
        return None
    if importlib.util.find_spec("shiftaddaug_plugin.layers.shift") is None:
        return None
    from shiftaddaug_plugin.layers.shift import ShiftConv2d

    return ShiftConv2d


def peak_extra_mb(step: Callable[[], None]) -> float:
    """Peak live c10-allocator bytes during ``step()`` above the level at its start (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def _spread(times: List[float]) -> float:
    qs = statistics.quantiles(times, n=10) if len(times) >= 3 else [min(times)] * 9
    return (qs[8] - qs[0]) / statistics.median(times)


def bench_shape(shape: LayerShape, batch: int, size: int, repeats: int, shift_cls: Optional[type]) -> Row:
    torch.manual_seed(0)
    conv = nn.Conv2d(shape.cin, shape.cout, shape.k, shape.stride, shape.padding, groups=shape.groups, bias=False)
    adder = AdderConv2d.from_float(conv)
    ops: Dict[str, nn.Module] = {"conv": conv, "adder": adder}
    if shift_cls is not None:
        shift = shift_cls(shape.cin, shape.cout, shape.k, shape.stride, shape.padding, 1, shape.groups, False)
        with torch.no_grad():
            shift.weight.copy_(conv.weight)
        ops["shift"] = shift
    size = shape.input_size(size)
    x = torch.randn(batch, shape.cin, size, size, requires_grad=True)
    with torch.no_grad():
        out_shape = conv(x).shape
    grad = torch.randn(out_shape)
    steps = {name: fwd_bwd_step(m, x, grad) for name, m in ops.items()}

    start = time.perf_counter()
    steps["adder"]()  # compiles + autotunes this shape
    compile_s = time.perf_counter() - start
    for _ in range(2):  # warm-up
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    best = {name: min(ts) * 1e3 for name, ts in times.items()}
    mem = {name: peak_extra_mb(step) for name, step in steps.items()}
    choices = adder_functional.autotune_choices()
    formulation = next((v for k, v in choices.items()
                        if f"C{shape.cin} {size}x{size} O{shape.cout} k{shape.k}x{shape.k} s({shape.stride}, "
                        f"{shape.stride})" in k and f"N{batch} " in k),
                       "native" if adder_functional.resolve_backend() == "native" else "taps")
    return Row(
        shape=shape.name, kind=shape.kind, conv_ms=med["conv"], adder_ms=med["adder"],
        adder_ratio=med["adder"] / med["conv"], adder_ratio_min=best["adder"] / best["conv"],
        shift_ms=med.get("shift"), shift_ratio=(med["shift"] / med["conv"]) if "shift" in med else None,
        shift_ratio_min=(best["shift"] / best["conv"]) if "shift" in best else None,
        conv_mb=mem["conv"], adder_mb=mem["adder"], adder_mem_ratio=mem["adder"] / max(mem["conv"], 1e-9),
        shift_mb=mem.get("shift"), compile_s=compile_s, formulation=formulation,
        spread={name: _spread(ts) for name, ts in times.items()},
    )


def _flag(ok: bool) -> str:
    return "" if ok else " (!)"


def render(rows: List[Row], has_shift: bool) -> str:
    head = ["shape", "conv ms", "adder ms", "adder/conv", "(min)", "target"]
    if has_shift:
        head += ["shift ms", "shift/conv", "(min)"]
    head += ["conv MB", "adder MB", "adder/conv mem", "formulation", "compile s", "spread c/a"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        target = TIME_TARGET[r.kind]
        cells = [r.shape, f"{r.conv_ms:.1f}", f"{r.adder_ms:.1f}",
                 f"{r.adder_ratio:.2f}x{_flag(r.adder_ratio <= target)}",
                 f"{r.adder_ratio_min:.2f}x{_flag(r.adder_ratio_min <= target)}", f"<= {target}x"]
        if has_shift:
            sr = r.shift_ratio if r.shift_ratio is not None else float("nan")
            srm = r.shift_ratio_min if r.shift_ratio_min is not None else float("nan")
            cells += [f"{r.shift_ms:.1f}", f"{sr:.2f}x{_flag(sr <= SHIFT_TARGET)}",
                      f"{srm:.2f}x{_flag(srm <= SHIFT_TARGET)}"]
        mem_ok = r.adder_mem_ratio <= MEM_RATIO_TARGET and r.adder_mb <= MEM_ABS_TARGET_MB
        cells += [f"{r.conv_mb:.1f}", f"{r.adder_mb:.1f}", f"{r.adder_mem_ratio:.2f}x{_flag(mem_ok)}",
                  r.formulation, f"{r.compile_s:.1f}",
                  f"{r.spread['conv']:.0%}/{r.spread['adder']:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}; 5 repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON to this file")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per shape (default 15; quick 5)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", action="append", default=None, metavar="NAME",
                        help="only this layer shape (repeatable), e.g. --shape 'pw 320->1280 @1x1'")
    args = parser.parse_args(argv)
    known = [s.name for s in SHAPES]
    unknown = [name for name in args.shape or [] if name not in known]
    if unknown:
        parser.error(f"unknown --shape {unknown}; choose from {known}")
    if args.batch < 1 or args.size < 4 or args.threads < 1:
        parser.error("--batch, --threads must be >= 1 and --size >= 4")
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 15)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    shift_cls = _load_shift_conv()
    shapes = [s for s in SHAPES if (not args.quick or s.name in QUICK) and (not args.shape or s.name in args.shape)]
    backend = adder_functional.resolve_backend()
    print(f"# AdderConv2d / ShiftConv2d vs F.conv2d, fwd+bwd, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.threads} threads, median of {repeats} alternating rounds; adder backend: {backend}")
    if shift_cls is None:
        print("# ShiftConv2d column skipped: shiftaddaug_plugin/layers/shift.py not found")
    rows = []
    for shape in shapes:
        rows.append(bench_shape(shape, args.batch, args.size, repeats, shift_cls))
        print(f"#   done {shape.name}: adder/conv {rows[-1].adder_ratio:.2f}x", file=sys.stderr, flush=True)
    print(render(rows, shift_cls is not None))
    print("\n(!) = outside the docs/algorithms.md §2 target. adder/conv = ratio of medians; (min) = ratio of the "
          "fastest rounds "
          "(contention from other processes only adds time, so on a shared machine this is the less disturbed "
          "estimate). spread = (p90 - p10) / median of the per-round times (conv/adder).")
    if args.json is not None:
        args.json.write_text(json.dumps({"batch": args.batch, "size": args.size, "threads": args.threads,
                                         "repeats": repeats, "backend": backend,
                                         "load_avg": os.getloadavg(),
                                         "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
