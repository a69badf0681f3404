"""Training-step benchmark on the reference tiny nets (docs/algorithms.md §4, §9; issue 6 speed targets).

Usage::

    .venv/bin/python benchmarks/train_step.py [--quick] [--json PATH] [--rounds R] [--warmup W] [--threads N]
                                              [--models shiftadd_mcunet shiftadd_mbv2_tiny] [--batch 64]
                                              [--size 32] [--in-chans 3] [--num-classes 10] [--compile-steps 3]

One training step = the step of ``shiftaddaug_plugin.train.augtrain.train_one_epoch``: ``ShiftAddAugTask`` forward
(label smoothing 0.1), non-finite-loss check, ``zero_grad``, one backward, one optimizer step (timm
``create_optimizer_v2('sgd')``: Nesterov momentum 0.9, lr 0.05, wd 4e-5 not on bias/BN, as the trainer's defaults).
Per model (``timm.create_model(name, num_classes=10, in_chans=3, **variant)``, batch 64 of 32x32 random images):

(a) ``plain``       ``op=mult``                 the ordinary multiplicative network, one pass (the reference);
(b) ``mf-shift`` / ``mf-adder``  ``op=shift|adder``  the slim MF network trained directly, one pass;
(c) ``netaug``      ``op=mult, aug=True``      NetAug: target pass + one sampled augmented pass, one backward;
(d) ``saa-shift`` / ``saa-adder``  ``op=shift|adder, aug=True``  ShiftAddAug: the same two passes with an MF target.

(c) and (d) use the model's default NetAug augmentation lists (width and expand sampling both on: the first half of
training) and width samplers seeded identically, so every round all augmented variants train the *same* sampled
sub-network; this is checked after every round (the active widths of all augmented models are compared).

Warm-up: every variant first runs ``--compile-steps`` steps (the adder compiles and autotunes its kernels per layer
shape on first use, seconds per shape; oneDNN creates its primitives), then ``--warmup`` discarded alternating
rounds; compile time is therefore **excluded** from the timings. Any dynamo compilation or new adder autotune entry
during the timed rounds is counted and reported (it should be 0).

Targets (issue 15, judged on the ratio of medians): MF step (b) <= 1.6x the multiplicative step (a), stretch 1.3x;
AddAug step <= 1.6x the NetAug step (c), stretch 1.2x; ShiftAug step <= 1.05x the NetAug step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (  # noqa: E402
    Stats,
    add_common_args,
    alternating_rounds,
    fmt_ratio,
    machine_info,
    markdown_table,
    ratios,
    resolve_common_args,
    summarize,
    uptime,
    write_json,
)

MF_TARGET, MF_STRETCH = 1.6, 1.3  #: issue 15: directly trained MF step / multiplicative step
ADD_AUG_TARGET, ADD_AUG_STRETCH = 1.6, 1.2  #: issue 15: AddAug step / NetAug step
SHIFT_AUG_TARGET = 1.05  #: issue 15: ShiftAug step / NetAug step (a shift target adds only its quantisers)

#: name -> (model kwargs, augmented two-pass step)
VARIANTS: Dict[str, tuple[Dict[str, Any], bool]] = {
    "plain": ({"op": "mult"}, False),
    "mf-shift": ({"op": "shift"}, False),
    "mf-adder": ({"op": "adder"}, False),
    "netaug": ({"op": "mult", "aug": True}, True),
    "saa-shift": ({"op": "shift", "aug": True}, True),
    "saa-adder": ({"op": "adder", "aug": True}, True),
}
#: the reference each variant is judged against, the target and the stretch target (None: none set)
JUDGED: Dict[str, tuple[str, float, Optional[float]]] = {
    "mf-shift": ("plain", MF_TARGET, MF_STRETCH), "mf-adder": ("plain", MF_TARGET, MF_STRETCH),
    "saa-shift": ("netaug", SHIFT_AUG_TARGET, None), "saa-adder": ("netaug", ADD_AUG_TARGET, ADD_AUG_STRETCH),
}


@dataclass
class VariantResult:
    variant: str
    model_kwargs: Dict[str, Any]
    params: int
    stats: Stats
    vs_plain: Dict[str, float]  #: ratio of medians / of minimums to (a)
    vs_netaug: Optional[Dict[str, float]]  #: for the augmented variants
    target: Optional[str]  #: e.g. "<= 1.6x plain: ok; stretch 1.3x: missed"
    meets_target: Optional[bool]  #: judged on the ratio of medians
    compile_s: float  #: wall time of the --compile-steps first steps


@dataclass
class ModelResult:
    model: str
    variants: List[VariantResult]
    compiles_during_timing: int
    autotune_entries_during_timing: int
    widths_checked_rounds: int


class StepRunner:
    """One variant: model, timm task and optimizer, and a ``step()`` mirroring ``train_one_epoch``'s inner loop."""

    def __init__(self, name: str, model_name: str, kwargs: Dict[str, Any], augment: bool, args: argparse.Namespace,
                 images: torch.Tensor, targets: torch.Tensor) -> None:
        import timm
        from timm.optim import create_optimizer_v2

        import shiftaddaug_plugin.models  # noqa: F401 - registers the shiftadd_* models
        from shiftaddaug_plugin.augment import WidthSampler
        from shiftaddaug_plugin.train.augtrain import ShiftAddAugTask

        torch.manual_seed(args.seed)
        self.name = name
        self.model: nn.Module = timm.create_model(model_name, pretrained=False, num_classes=args.num_classes,
                                                  in_chans=args.in_chans, **kwargs)
        self.task = ShiftAddAugTask(self.model, alpha=1.0, augment=augment, sampler=WidthSampler(args.seed),
                                    criterion_kwargs={"smoothing": 0.1}, verbose=False)
        self.task.width_aug = True
        self.task.train()
        self.optimizer = create_optimizer_v2(self.model, opt="sgd", lr=0.05, weight_decay=4e-5, momentum=0.9,
                                             filter_bias_and_bn=True)
        self.images, self.targets = images, targets

    def step(self) -> None:
        out = self.task(self.images, self.targets)
        loss = out["loss"]
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"{self.name}: non-finite loss {loss.item()} in the benchmark step; "
                                     "lower the learning rate in StepRunner")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def active_widths(self) -> List[int]:
        """``active_out_channels`` of every hybrid conv, in module order (the sampled augmented sub-network)."""
        return [int(m.active_out_channels) for m in self.model.modules() if hasattr(m, "active_out_channels")]


def _dynamo_frames() -> int:
    """Graphs dynamo has compiled so far in this process (``counters['stats']['unique_graphs']``)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - dynamo missing
        return 0
    return int(counters["stats"]["unique_graphs"])


def _autotune_entries() -> int:
    from shiftaddaug_plugin.functional import adder as adder_functional

    return len(adder_functional.autotune_choices())


def bench_model(model_name: str, variants: List[str], args: argparse.Namespace, rounds: int,
                warmup: int) -> ModelResult:
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, args.in_chans, args.size, args.size, generator=g)
    targets = torch.randint(0, args.num_classes, (args.batch,), generator=g)
    runners: Dict[str, StepRunner] = {}
    compile_s: Dict[str, float] = {}
    for name in variants:
        kwargs, augment = VARIANTS[name]
        runners[name] = StepRunner(name, model_name, kwargs, augment, args, images, targets)
        start = time.perf_counter()
        for _ in range(args.compile_steps):
            runners[name].step()
        compile_s[name] = time.perf_counter() - start
        print(f"#   {model_name} {name}: built, {args.compile_steps} compile/warm-up steps in {compile_s[name]:.1f} s",
              file=sys.stderr, flush=True)
    augmented = [n for n in variants if VARIANTS[n][1]]
    checked = 0

    def check_widths(i: int) -> None:
        nonlocal checked
        if len(augmented) < 2:
            return
        first = runners[augmented[0]].active_widths()
        for other in augmented[1:]:
            if runners[other].active_widths() != first:
                raise RuntimeError(f"round {i}: {other} trained a different sampled sub-network than "
                                   f"{augmented[0]}; the width samplers are out of step")
        checked += 1

    for _ in range(warmup):  # discarded rounds after the compile steps (keeps every sampler in lockstep)
        for r in runners.values():
            r.step()
    frames0, tune0 = _dynamo_frames(), _autotune_entries()
    times = alternating_rounds({n: r.step for n, r in runners.items()}, rounds, warmup=0, on_round=check_widths)
    compiles, tunes = _dynamo_frames() - frames0, _autotune_entries() - tune0
    results = []
    for name in variants:
        vs_plain = ratios(times, name, "plain") if "plain" in times else {}
        vs_netaug = ratios(times, name, "netaug") if VARIANTS[name][1] and "netaug" in times else None
        target = meets = None
        if name in JUDGED and JUDGED[name][0] in times:
            ref, limit, stretch = JUDGED[name]
            ratio = ratios(times, name, ref)["median"]
            meets = ratio <= limit
            target = f"<= {limit}x {ref}: {'ok' if meets else 'MISSED'}"
            if stretch is not None:
                target += f"; stretch {stretch}x: {'ok' if ratio <= stretch else 'missed'}"
        results.append(VariantResult(name, dict(VARIANTS[name][0]),
                                     sum(p.numel() for p in runners[name].model.parameters()),
                                     summarize(times[name]), vs_plain, vs_netaug, target, meets, compile_s[name]))
    return ModelResult(model_name, results, compiles, tunes, checked)


def render(result: ModelResult) -> str:
    header = ["variant", "model kwargs", "ms/step", "min ms", "vs plain (min)", "vs netaug (min)", "target",
              "spread", "compile+warm s"]
    rows = []
    for v in result.variants:
        kw = ", ".join(f"{k}={val}" for k, val in v.model_kwargs.items())
        plain = f"{fmt_ratio(v.vs_plain['median'])} ({fmt_ratio(v.vs_plain['min'])})" if v.vs_plain else ""
        netaug = (f"{fmt_ratio(v.vs_netaug['median'])} ({fmt_ratio(v.vs_netaug['min'])})"
                  if v.vs_netaug is not None else "")
        target = "" if v.target is None else v.target
        rows.append([v.variant, kw, f"{v.stats.median_ms:.1f}", f"{v.stats.min_ms:.1f}", plain, netaug, target,
                     f"{v.stats.spread:.0%}", f"{v.compile_s:.1f}"])
    return markdown_table(header, rows)


def add_step_args(parser: argparse.ArgumentParser) -> None:
    """The step's input options, shared with ``profile_step.py``: batch, image size, channels, classes, seed."""
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3, choices=(1, 3))
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "train_step", rounds=20, quick_rounds=5, warmup=2)
    parser.add_argument("--models", nargs="+", default=["shiftadd_mcunet", "shiftadd_mbv2_tiny"],
                        help="registered shiftadd_* models (default: shiftadd_mcunet shiftadd_mbv2_tiny)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="which steps to time ('plain' is the reference and always included)")
    add_step_args(parser)
    parser.add_argument("--compile-steps", type=int, default=3,
                        help="untimed first steps per variant (adder compilation, oneDNN set-up); default 3")
    args = parser.parse_args(argv)
    rounds, warmup = resolve_common_args(parser, args, rounds=20, quick_rounds=5, warmup=2)
    if args.batch < 1 or args.size < 8 or args.num_classes < 2 or args.compile_steps < 1:
        parser.error("need --batch >= 1, --size >= 8, --num-classes >= 2, --compile-steps >= 1")
    from shiftaddaug_plugin.models import REFERENCE_ARCHS

    unknown = [m for m in args.models if m not in REFERENCE_ARCHS]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {sorted(REFERENCE_ARCHS)}")
    if args.quick and args.models == parser.get_default("models"):
        args.models = ["shiftadd_mbv2_tiny"]
    variants = ["plain"] + [v for v in VARIANTS if v in args.variants and v != "plain"]
    load_before = uptime()
    print(f"# Training step (ShiftAddAugTask + SGD), batch {args.batch}, {args.in_chans}x{args.size}x{args.size}, "
          f"{args.num_classes} classes, {args.threads} threads; median of {rounds} alternating rounds after "
          f"{args.compile_steps} compile steps + {warmup} warm-up rounds per variant (compile time excluded)")
    print(f"# machine: {load_before}")
    results = []
    for model_name in args.models:
        result = bench_model(model_name, variants, args, rounds, warmup)
        results.append(result)
        print(f"\n## {model_name}\n")
        print(render(result))
        print(f"\ncompilations during the timed rounds: {result.compiles_during_timing} dynamo frames, "
              f"{result.autotune_entries_during_timing} new adder autotune entries; identical sampled widths "
              f"checked in {result.widths_checked_rounds} rounds", flush=True)
    load_after = uptime()
    print("\nratio = median step / median step of the reference, (min) = fastest / fastest round. Targets judged on "
          "the ratio of medians. spread = (p90 - p10) / median of the per-round times.")
    print(f"# machine after: {load_after}")
    write_json(args.json, {
        "benchmark": "train_step", "batch": args.batch, "size": args.size, "in_chans": args.in_chans,
        "num_classes": args.num_classes, "rounds": rounds, "warmup": warmup, "compile_steps": args.compile_steps,
        "quick": args.quick, "load_before": load_before, "load_after": load_after,
        "loadavg_after": os.getloadavg(), "machine": machine_info(args.threads), "models": results,
    })
    print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
