"""Command line of the two-stage NAS (ShiftAddAug §3.4, docs/algorithms.md §7; docs/nas.md).

    python -m shiftaddaug_plugin.nas.cli train-supernet --space mcunet --img-size 32 --epochs 5 --out
    runs/nas/supernet.pth
    python -m shiftaddaug_plugin.nas.cli search --supernet runs/nas/supernet.pth --out-dir runs/nas/s1 \\
        --n-trials 200 --max-macs 2e6 --max-peak-kb 64 [--ops mult,shift,adder --base-op shift]
    python -m shiftaddaug_plugin.nas.cli search --mode select --deep-arch runs/nas/s1/arch.json \\
        --supernet runs/nas/supernet.pth --out-dir runs/nas/s2 --max-energy-uj 1.0
    shiftaddaug-train --model shiftadd_custom --model-kwargs arch=runs/nas/s2/depth_aug.json ...

``search`` writes to ``--out-dir``: ``arch.json`` (the chosen target: an ``Arch`` JSON with its timm block strings,
accepted by ``timm.create_model('shiftadd_custom', arch=...)``), in ``select`` mode also ``depth_aug.json`` (deep arch
+ selection: trains target and depth augmentation jointly), ``candidates.json`` (every feasible candidate and the
Pareto front) and ``pareto.png`` (accuracy proxy vs. the cost objective). The study is stored in
``--storage`` (default ``sqlite:///<out-dir>/nas_study.db``); rerunning the same command resumes it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from shiftaddaug_plugin.cost.plot import plot_pareto

from .cost import Constraints
from .data import load_fmnist_splits
from .search import ArchEvaluator, run_search
from .space import SPACE_PRESETS, SearchSpace, load_arch
from .stage2 import save_depth_aug
from .supernet import (
    Supernet,
    load_supernet,
    save_supernet,
    train_supernet,
)

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(float(text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 2e6)") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shiftaddaug_plugin.nas.cli",
                                description="Two-stage NAS of ShiftAddAug (supernet -> deep subnet -> target).")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's; 1 is fastest for tiny nets on a busy machine)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-supernet", help="stage 1: train the weight-sharing supernet (sandwich rule)")
    t.add_argument("--space", default="mcunet",
                   help="search space: a preset (mcunet, tiny) or a JSON file of SearchSpace fields")
    t.add_argument("--ops", default=None, help="per-block operator choices, e.g. mult,shift,adder (NASA space)")
    t.add_argument("--base-op", default=None, help="operator of the layers outside the searched blocks")
    t.add_argument("--img-size", type=_positive_int, default=32)
    t.add_argument("--train-images", type=_positive_int, default=10000)
    t.add_argument("--holdout-images", type=_positive_int, default=2000)
    t.add_argument("--epochs", type=_positive_int, default=5)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=_number, default=0.05)
    t.add_argument("--weight-decay", type=_number, default=4e-5)
    t.add_argument("--warmup-epochs", type=int, default=0)
    t.add_argument("--num-random", type=int, default=2, help="random members per sandwich step (default 2)")
    t.add_argument("--no-distill", action="store_true", help="no in-place distillation from the largest member")
    t.add_argument("--kernel-transform", action="store_true", help="OFA kernel transform matrices")
    t.add_argument("--data-dir", default=None, help="Fashion-MNIST idx folder")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="checkpoint path (e.g. runs/nas/supernet.pth)")

    s = sub.add_parser("search", help="evolutionary search (Optuna NSGA-II) under hardware constraints")
    s.add_argument("--supernet", required=True, help="checkpoint of train-supernet")
    s.add_argument("--mode", default="arch", choices=("arch", "select"),
                   help="arch: search the space; select: stage 2, choose target blocks of --deep-arch")
    s.add_argument("--deep-arch", default=None,
                   help="select mode: deep subnet (arch JSON; default: the supernet's largest member)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///<out-dir>/nas_study.db)")
    s.add_argument("--study-name", default=None, help="default: nas-<mode>")
    s.add_argument("--n-trials", type=_positive_int, default=100, help="total completed trials of the study")
    s.add_argument("--sampler", default="nsga2", choices=("nsga2", "random"))
    s.add_argument("--population", type=_positive_int, default=20, help="NSGA-II population size")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--worker", type=int, default=0, help="worker id (different per parallel process)")
    s.add_argument("--objective", default="energy_uj", choices=("energy_uj", "macs", "mults", "params", "peak_kb"))
    s.add_argument("--precision", default="fp32", help="energy column of the cost model (fp32, int32, int8)")
    s.add_argument("--max-macs", type=_number, default=None)
    s.add_argument("--max-mults", type=_number, default=None)
    s.add_argument("--max-params", type=_number, default=None)
    s.add_argument("--max-peak-kb", type=_number, default=None, help="peak activation memory limit (KiB)")
    s.add_argument("--max-energy-uj", type=_number, default=None)
    s.add_argument("--ops", default=None,
                   help="arch mode: per-block operator choices (e.g. mult,shift,adder); default: the supernet space's")
    s.add_argument("--base-op", default=None, help="operator outside the searched blocks (default: the space's)")
    s.add_argument("--recal-images", type=_positive_int, default=500, help="BN recalibration images per candidate")
    s.add_argument("--holdout-images", type=_positive_int, default=None,
                   help="use only the first N held-out images for the proxy (default: all)")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    return p


def _load_space(text: str) -> "object":

    if text in SPACE_PRESETS:
        return SPACE_PRESETS[text]
    if os.path.isfile(text):
        with open(text, "r", encoding="utf-8") as handle:
            return SearchSpace.from_dict(json.load(handle))
    raise ValueError(f"--space {text!r} is neither a preset ({', '.join(SPACE_PRESETS)}) nor a JSON file")


def _ops(text: str | None) -> list[str] | None:
    return None if text is None else [o.strip() for o in text.split(",") if o.strip()]


def _train_supernet(args: argparse.Namespace) -> int:
    import torch

    space = _load_space(args.space)
    if args.ops is not None or args.base_op is not None:
        space = space.with_ops(_ops(args.ops) or space.op_choices, args.base_op)
    torch.manual_seed(args.seed)
    splits = load_fmnist_splits(args.img_size, args.train_images, args.holdout_images, root=args.data_dir,
                                seed=args.seed)
    supernet = Supernet(space, num_classes=10, in_chans=1, kernel_transform=args.kernel_transform)
    print(f"[nas] supernet: {sum(p.numel() for p in supernet.parameters()) / 1e3:.1f}k parameters, space of "
          f"{space.size():.3g} architectures; training {args.train_images} images at {args.img_size}px, "
          f"{args.epochs} epochs (sandwich rule)")
    stats = train_supernet(supernet, splits.train_x, splits.train_y, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                           num_random=args.num_random, distill=not args.no_distill, seed=args.seed)

    ev = ArchEvaluator(supernet, splits.train_x, splits.holdout_x, splits.holdout_y)
    report = {}
    for name, arch in (("largest", space.max_arch()), ("smallest", space.min_arch())):
        report[name] = ev.accuracy(supernet.extract(arch))
        print(f"[nas] {name} member: held-out accuracy {report[name]:.2f}% after BN recalibration ({arch.describe()})")
    save_supernet(supernet, args.out, img_size=args.img_size, train_images=args.train_images,
                  holdout_images=args.holdout_images, seed=args.seed, data_dir=args.data_dir,
                  loss=stats["loss"], seconds=stats["seconds"], **{f"acc_{k}": v for k, v in report.items()})
    print(f"[nas] saved {args.out} ({stats['seconds']:.0f}s)")
    return 0


def _search(args: argparse.Namespace) -> int:

    supernet, meta = load_supernet(args.supernet)
    splits = load_fmnist_splits(int(meta["img_size"]), int(meta["train_images"]), int(meta["holdout_images"]),
                                root=args.data_dir or meta.get("data_dir"), seed=int(meta["seed"]))
    hx, hy = splits.holdout_x, splits.holdout_y
    if args.holdout_images is not None:
        hx, hy = hx[: args.holdout_images], hy[: args.holdout_images]
    space = supernet.space
    if args.ops is not None or args.base_op is not None:
        if args.mode != "arch":
            raise ValueError("--ops/--base-op apply to --mode arch; in select mode the deep arch fixes the operators")
        space = space.with_ops(_ops(args.ops) or space.op_choices, args.base_op)
        supernet.space = space  # the multiplicative weights do not depend on the operator choice
    deep = None
    if args.mode == "select":
        deep = load_arch(args.deep_arch) if args.deep_arch else space.max_arch()
        if not set(deep.ops()) <= set(space.op_choices) or deep.base_op != space.base_op:
            # the deep arch fixes the operators (e.g. an MF deep net searched on the multiplicative supernet)
            space = space.with_ops(tuple(dict.fromkeys((*space.op_choices, *deep.ops()))), deep.base_op)
            supernet.space = space
        space.validate(deep)
    elif args.deep_arch:
        raise ValueError("--deep-arch applies to --mode select")
    constraints = Constraints(args.max_macs, args.max_mults, args.max_params, args.max_peak_kb, args.max_energy_uj)
    evaluator = ArchEvaluator(supernet, splits.train_x, hx, hy, recal_images=args.recal_images,
                              precision=args.precision, deep=deep)
    os.makedirs(args.out_dir, exist_ok=True)
    result = run_search(evaluator, mode=args.mode, space=space, constraints=constraints, objective=args.objective,
                        n_trials=args.n_trials, storage=args.storage, study_name=args.study_name or f"nas-{args.mode}",
                        out_dir=args.out_dir, sampler=args.sampler, population_size=args.population, seed=args.seed,
                        worker=args.worker, log=None if args.quiet else print,
                        meta={"supernet": os.path.abspath(args.supernet)})
    obj = args.objective
    summary = {"objective": obj, "constraints": constraints.to_dict(), "mode": args.mode,
               "trials": len(result.study.trials), "feasible": len(result.candidates),
               "front": [c.to_dict() for c in result.front], "candidates": [c.to_dict() for c in result.candidates],
               "best": result.best.to_dict() if result.best else None}
    with open(os.path.join(args.out_dir, "candidates.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    if result.best is None:
        print(f"[nas] no feasible candidate among {len(result.study.trials)} trials; relax the constraints "
              f"{constraints.to_dict()} or run more trials", file=sys.stderr)
        return 2
    best = result.best
    front_ids = {c.number for c in result.front}
    runs = [{"name": f"#{c.number}", "accuracy": c.accuracy, "energy": float(getattr(c.cost, obj)),
             "group": "Pareto front" if c.number in front_ids else "feasible"} for c in result.candidates]
    plot_pareto(runs, os.path.join(args.out_dir, "pareto.png"), title=f"NAS ({args.mode}): accuracy proxy vs {obj}",
                energy_label=obj, accuracy_label="held-out accuracy proxy (%)", annotate=len(runs) <= 40)
    arch_path = os.path.join(args.out_dir, "arch.json")
    extra = {"search": {"trial": best.number, "accuracy_proxy": best.accuracy, "cost": best.cost.to_dict(),
                        "constraints": constraints.to_dict(), "objective": obj}}
    best.arch.to_json(arch_path, **extra)
    train_arch = arch_path
    if best.selection is not None and deep is not None:
        train_arch = os.path.join(args.out_dir, "depth_aug.json")
        save_depth_aug(train_arch, deep, best.selection, **extra)
    print(f"[nas] {len(result.candidates)} feasible of {len(result.study.trials)} trials, front of "
          f"{len(result.front)}; "
          f"chosen trial #{best.number}: accuracy proxy {best.accuracy:.2f}%, {obj} {getattr(best.cost, obj):.4g}, "
          f"MACs {best.cost.macs / 1e6:.3f}M, params {best.cost.params / 1e3:.1f}k, peak {best.cost.peak_kb:.1f}KiB")
    print(f"[nas] target: {best.arch.describe()}")
    print(f"[nas] block strings: {best.arch.block_strings()}")
    print(f"[nas] wrote {arch_path}, {os.path.join(args.out_dir, 'pareto.png')}, candidates.json")
    print(f"[nas] train it: shiftaddaug-train --model shiftadd_custom --model-kwargs arch={train_arch} "
          f"--img-size {meta['img_size']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (bad arguments: message on stderr, code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    start = time.time()
    try:
        code = _train_supernet(args) if args.command == "train-supernet" else _search(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[nas] {args.command} finished in {time.time() - start:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
