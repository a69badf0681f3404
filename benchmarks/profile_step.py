"""Where a training step's time goes: torch.profiler breakdown of the MF adder, NetAug, ShiftAug and AddAug steps.

Usage::

    .venv/bin/python benchmarks/profile_step.py [--quick] [--json PATH] [--models ...] [--variants ...]
                                                [--steps 5] [--threads 2] [--batch 64] [--size 32]

For every (model, variant) the step of ``benchmarks/train_step.py`` (``ShiftAddAugTask`` forward, backward, SGD
step; same model kwargs, batch and seeds) is warmed up (the adder compiles its kernels), then ``--steps`` steps run
under ``torch.profiler`` (CPU activities, input shapes recorded). Reported per variant:

* **categories**: the self CPU time of every profiled op, summed per category (adder forward / dX kernels, the
  adder's dW conv and scaling, conv forward and backward, batch norm, slicing/cat/copies, element-wise,
  optimizer, autograd engine, other), as ms per step and as a share of the wall time of a step; ``unprofiled`` is
  the wall time no op accounts for (Python, module calls, dispatch between ops);
* **top ops**: the ops with the largest self time;
* **adder calls by shape**: forward, input-gradient and weight-gradient time of every adder layer shape (the
  profiler ranges ``adder.forward`` / ``adder.input_grad`` / ``adder.weight_grad`` are added by this script around
  the adder's phases for the duration of the profile).

The profiler's ranges are nested per thread, so self times add up to the step's time on the calling thread;
intra-op parallel work on the second core is inside the op that launched it. With the ``native`` adder backend
the C kernels are called through ctypes, not as aten ops: their time is the adder range's own self time, while
the layout copies around them (permute / contiguous / pad) are booked under slice/cat/copy.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import add_common_args, machine_info, markdown_table, resolve_common_args, uptime, write_json  # noqa: E402
from train_step import VARIANTS, StepRunner, add_step_args  # noqa: E402

#: (category, predicate on the op name), first match wins; the adder ranges come first.
CATEGORIES: List[Tuple[str, Callable[[str], bool]]] = [
    ("adder forward", lambda n: n.startswith("adder.forward")),
    ("adder dX", lambda n: n.startswith("adder.input_grad")),
    ("adder dW", lambda n: n.startswith("adder.weight_grad")),
    ("conv", lambda n: "conv" in n or n in ("aten::mkldnn_convolution", "aten::_convolution")),
    ("linear", lambda n: n in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::t")),
    ("batch norm", lambda n: "batch_norm" in n),
    ("slice/cat/copy", lambda n: n in (
        "aten::cat", "aten::slice", "aten::copy_", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::clone",
        "aten::constant_pad_nd", "aten::narrow", "aten::as_strided", "aten::select", "aten::view",
        "aten::reshape", "aten::_reshape_alias", "aten::empty_like", "aten::empty", "aten::empty_strided",
        "aten::zeros", "aten::zero_", "aten::fill_", "aten::pad", "aten::slice_backward", "aten::new_zeros",
        "aten::expand", "aten::unsqueeze", "aten::detach", "detach", "aten::alias", "aten::resolve_conj",
        "aten::resolve_neg", "aten::split", "aten::split_with_sizes", "aten::squeeze", "aten::permute",
        "aten::transpose", "aten::lift_fresh", "aten::result_type")),
    ("optimizer", lambda n: n.startswith("Optimizer.") or n.startswith("aten::_foreach")),
    ("autograd engine", lambda n: n.startswith("autograd::") or n.endswith("Backward0") or n.endswith("Backward1")
     or n.endswith("Backward") or "AccumulateGrad" in n),
    ("element-wise", lambda n: n.startswith("aten::") and any(k in n for k in (
        "add", "mul", "sub", "div", "relu", "hardtanh", "clamp", "where", "sum", "mean", "neg", "abs", "sign",
        "threshold", "sqrt", "norm", "log_softmax", "nll", "softmax", "lerp", "max", "min", "exp", "pow",
        "round", "floor", "log2", "ge", "lt", "gt", "le", "eq", "ne", "isfinite", "any", "all", "item",
        "_local_scalar_dense", "mse", "cross_entropy", "logical", "bitwise", "hardswish", "hardsigmoid",
        "sigmoid", "silu", "dropout", "avg_pool", "adaptive_avg_pool", "mean", "std", "var", "rsub", "rand",
        "normal", "uniform", "randperm", "gather", "scatter", "index"))),
]


def category_of(name: str) -> str:
    """The category an op's self time is booked under (see ``CATEGORIES``)."""
    for label, predicate in CATEGORIES:
        if predicate(name):
            return label
    return "other"


def _shape_text(geom: Any) -> str:
    kind = "dw" if geom.groups > 1 and geom.groups == geom.c else ("pw" if geom.kh * geom.kw == 1 else "dense")
    return (f"{kind} {geom.c}->{geom.o} k{geom.kh} s{geom.stride[0]} @{geom.h}x{geom.w}")


class AdderRanges:
    """Profiler ranges around the adder's forward, input-gradient and weight-gradient phases, keyed by shape."""

    def __init__(self) -> None:
        from shiftaddaug_plugin.functional import adder

        self._adder = adder
        self._saved: Dict[Tuple[Any, str], Any] = {}

    def _wrap(self, owner: Any, attr: str, label: str, geom_of: Callable[..., Any]) -> None:
        original = getattr(owner, attr)
        self._saved[(owner, attr)] = original

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with torch.profiler.record_function(f"{label} {geom_of(*args)}"):
                return original(*args, **kwargs)

        setattr(owner, attr, wrapped)

    def __enter__(self) -> "AdderRanges":
        self._wrap(self._adder, "_forward", "adder.forward", lambda xp, w, geom, *a: _shape_text(geom))
        self._wrap(self._adder, "_input_grad", "adder.input_grad", lambda x, w, g, geom, *a: _shape_text(geom))
        self._wrap(self._adder, "_weight_grad", "adder.weight_grad", lambda x, w, g, geom, *a: _shape_text(geom))
        return self

    def __exit__(self, *exc: Any) -> None:
        for (owner, attr), original in self._saved.items():
            setattr(owner, attr, original)
        self._saved.clear()


def _events(prof: torch.profiler.profile) -> Iterator[Tuple[str, float]]:
    """(name, self CPU µs) of every op event of the main thread's trace, nested ranges included."""
    for event in prof.key_averages():
        yield event.key, float(event.self_cpu_time_total)


def profile_variant(model_name: str, variant: str, args: argparse.Namespace, steps: int) -> Dict[str, Any]:
    kwargs, augment = VARIANTS[variant]
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, args.in_chans, args.size, args.size, generator=g)
    targets = torch.randint(0, args.num_classes, (args.batch,), generator=g)
    runner = StepRunner(variant, model_name, kwargs, augment, args, images, targets)
    start = time.perf_counter()
    for _ in range(args.warmup_steps):
        runner.step()
    warm_s = time.perf_counter() - start
    with AdderRanges():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=False) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                runner.step()
            wall_ms = (time.perf_counter() - start) * 1e3 / steps
    per_category: Dict[str, float] = defaultdict(float)
    per_op: Dict[str, float] = defaultdict(float)
    per_shape: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    # adder ranges: their self time excludes the ops inside; book the inclusive time of the range instead
    inclusive = {e.key: float(e.cpu_time_total) for e in prof.key_averages()}
    adder_keys = [k for k in inclusive if k.startswith("adder.")]
    inside_adder = _ops_inside(prof, adder_keys)
    for name, self_us in _events(prof):
        ms = self_us / 1e3 / steps
        if name.startswith("adder."):
            phase, shape = name.split(" ", 1)
            total = inclusive[name] / 1e3 / steps
            per_shape[shape][phase.split(".", 1)[1]] += total
            per_category[category_of(name)] += total
            continue
        ms_outside = ms - inside_adder.get(name, 0.0) / 1e3 / steps
        if ms_outside <= 0:
            continue
        per_op[name] += ms_outside
        per_category[category_of(name)] += ms_outside
    profiled = sum(per_category.values())
    per_category["unprofiled (Python, dispatch)"] = max(0.0, wall_ms - profiled)
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]
    return {
        "model": model_name, "variant": variant, "model_kwargs": dict(kwargs), "steps": steps,
        "warmup_s": warm_s, "wall_ms_per_step": wall_ms,
        "categories_ms": dict(sorted(per_category.items(), key=lambda kv: -kv[1])),
        "top_ops_ms": dict(top),
        "adder_by_shape_ms": {k: dict(v) for k, v in sorted(per_shape.items(), key=lambda kv: -sum(kv[1].values()))},
    }


def _ops_inside(prof: torch.profiler.profile, range_keys: List[str]) -> Dict[str, float]:
    """Self µs of every op that ran inside one of the given ranges (they are booked with the range)."""
    inside: Dict[str, float] = defaultdict(float)
    if not range_keys:
        return inside
    keys = set(range_keys)
    for event in prof.events():
        parent = event.cpu_parent
        while parent is not None and parent.name not in keys:
            parent = parent.cpu_parent
        if parent is not None and event.name not in keys:
            inside[event.name] += float(event.self_cpu_time_total)
    return inside


def render(result: Dict[str, Any]) -> str:
    wall = result["wall_ms_per_step"]
    rows = [[name, f"{ms:.1f}", f"{ms / wall:.0%}"] for name, ms in result["categories_ms"].items()]
    text = [f"### {result['model']} {result['variant']}: {wall:.1f} ms/step (profiled, {result['steps']} steps)\n",
            markdown_table(["category", "ms/step", "share"], rows)]
    if result["adder_by_shape_ms"]:
        shape_rows = [[shape, f"{t.get('forward', 0):.1f}", f"{t.get('input_grad', 0):.1f}",
                       f"{t.get('weight_grad', 0):.1f}"] for shape, t in result["adder_by_shape_ms"].items()]
        text += ["", markdown_table(["adder shape", "forward ms", "dX ms", "dW ms"], shape_rows)]
    op_rows = [[name, f"{ms:.1f}"] for name, ms in result["top_ops_ms"].items()]
    text += ["", markdown_table(["op (self time, outside the adder)", "ms/step"], op_rows)]
    return "\n".join(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "profile_step", rounds=5, quick_rounds=2, warmup=3)
    parser.add_argument("--models", nargs="+", default=["shiftadd_mcunet", "shiftadd_mbv2_tiny"])
    parser.add_argument("--variants", nargs="+", default=["plain", "mf-adder", "netaug", "saa-shift", "saa-adder"],
                        choices=list(VARIANTS))
    add_step_args(parser)
    parser.add_argument("--top", type=int, default=12, help="how many ops to list by self time (default 12)")
    args = parser.parse_args(argv)
    steps, warmup = resolve_common_args(parser, args, rounds=5, quick_rounds=2, warmup=3)
    args.warmup_steps = max(1, warmup)
    if args.quick and args.models == parser.get_default("models"):
        args.models = ["shiftadd_mbv2_tiny"]
    from shiftaddaug_plugin.models import REFERENCE_ARCHS

    unknown = [m for m in args.models if m not in REFERENCE_ARCHS]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {sorted(REFERENCE_ARCHS)}")
    load_before = uptime()
    print(f"# Profiled training steps, batch {args.batch}, {args.in_chans}x{args.size}x{args.size}, "
          f"{args.threads} threads, {steps} profiled steps after {args.warmup_steps} warm-up steps")
    print(f"# machine: {load_before}")
    results = []
    for model_name in args.models:
        for variant in args.variants:
            result = profile_variant(model_name, variant, args, steps)
            results.append(result)
            print("\n" + render(result), flush=True)
    load_after = uptime()
    print(f"\n# machine after: {load_after}")
    write_json(args.json, {"benchmark": "profile_step", "batch": args.batch, "size": args.size,
                           "in_chans": args.in_chans, "steps": steps, "load_before": load_before,
                           "load_after": load_after, "machine": machine_info(args.threads), "results": results})
    print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
