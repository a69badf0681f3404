#!/usr/bin/env python3
"""Reproduce ShiftAddAug's claims (arXiv 2407.02881) on offline data: one resumable script for every experiment.

    python tools/reproduce.py --budget small --only main-mcunet --jobs 2          # the classification main table
    python tools/reproduce.py --budget small --jobs 2                             # everything (hours on 2 cores)
    python tools/reproduce.py --list                                              # the plan, nothing runs
    python tools/reproduce.py --report-only                                       # rebuild tables/plot from disk

Experiment groups (``--only`` takes one or more, comma separated; ``--seeds`` overrides the preset's seeds):

* ``main-mcunet`` / ``main-mbv2``: the main table (paper Tab. 1 style) for MCUNet / MobileNetV2-Tiny on
  Fashion-MNIST (official 60k/10k split, 1 x 32 x 32 input, 10 classes). Rows: **Mult** (multiplicative net),
  **NetAug** (same net trained inside its wider multiplicative augmented net), **Shift** (DeepShift-Q target trained
  directly), **ShiftAug** (shift target trained inside the hybrid net), **Add** (AdderNet target trained directly),
  **AddAug** (adder target inside the hybrid net). The direct rows use ``--no-aug``: the *same* code path and
  target network with no augmented channel.
* ``ablation-remap``: AddAug with heterogeneous weight sharing (eq. 5, ``ConvertConfig.remap=True``); "off" is
  the main table's AddAug (same seeds, same recipe).
* ``ablation-block-variant``: ShiftAug / AddAug with ``--block-variant linear`` (docs/algorithms.md §6; "off" = main
  table), and AddAug block-variant without the eq. 5 remap at the switch (``--no-block-variant-remap``).
* ``ablation-sort-scope``: ShiftAug / AddAug sorting only the augmented channels (``--sort-scope augmented``; the
  default sorts all mid channels into the target); ``ablation-sort-remap``: AddAug without the eq. 5 remap of
  weights that cross an adder block at a sort (``--no-sort-remap``; ``ablation-sort-remap-mbv2``: the same on
  MobileNetV2-Tiny). Both pair with the main table's rows of the same model.
* ``ablation-aug-dims``: ShiftAug with width augmentation only (expand list ``[1.0]``) and expand augmentation only
  (width list ``[1.0]``); "both" = main table's ShiftAug.
  (The ablations use MCUNet unless their name says otherwise.)
* ``nas-mcunet``: the two-stage NAS against the hand-designed network (docs/nas.md). Before training, the NAS
  stages (tools/repro/nas_stages.py, resumable, under ``<results>/nas/``) train the supernet and search shift
  targets within the energy and peak memory of the MF MCUNet (``shiftadd_mcunet``, ``op=shift``); rows **NAS Shift**
  / **NAS ShiftAug** (the searched target trained directly / inside its hybrid network), **NAS ShiftAug+depth-aug**
  (stage 2: the target chosen inside a deeper network, whose other blocks are depth augmentation) and **NASA Shift**
  (NASA's per-block operator choice mult / shift / adder), paired with ``main-mcunet``'s Shift / ShiftAug of the
  same seeds (run ``--only main-mcunet,nas-mcunet --rows ...``). ``nas-proxy``: six searched architectures spread
  over the proxy's range, trained once each: the Kendall tau of proxy vs trained top-1 (``nas_report.json``,
  ``nas_search.png``: the search curves).
* ``seg``: MMSegmentation on the embedded Fashion-MNIST scenes (64 x 64, 11 classes), MobileNetV2-Tiny + FCN:
  Mult, Shift, ShiftAug, Add, AddAug, reported as mIoU (validation split after BN recalibration). Needs mmcv with
  compiled ops and mmsegmentation.
* ``seg-brain`` / ``seg-nuclei``: the same rows on real offline data (docs/segmentation.md): brain MRI tissue
  (MNI152 template of the nilearn wheel, 3 classes, 96 x 80 px, output stride 4) and nuclei (stardist wheel,
  2 classes, 64 x 64 px tiles). These datasets have their own splits: the mIoU of each run is that of its exported
  MF target on the 'val' split (``--split holdout``: choosing settings), and ``--test-eval`` evaluates it on the
  'test' split with ``tools/test_mmseg.py`` (reporting). The budget sets the iterations; the number of images is
  the dataset's. Seeds: ``--seeds`` (the presets run one segmentation seed).
* ``ablation-seg-nuclei-sort``: nuclei ShiftAug without channel sorting (``sort_interval=None``) and sorting only
  the augmented channels (``sort_scope=augmented``); both pair with ``seg-nuclei``'s ShiftAug of the same seed.

Budget presets (``--budget``), identical for every row, so rows differ only in the operator / augmentation:

* ``small`` (what fits on a shared 2-core CPU machine; ~1-4 min per run at one thread, adder runs longer: their
  kernels are compiled per layer shape on first use): 1,500 training images
  (a seeded random subset of the official training split; the subset depends on the seed, so the seed spread
  includes data sampling), evaluation on 2,000 images of the official test split, 5 epochs (~120 updates), batch 64, SGD
  Nesterov lr 0.05 (1 warm-up epoch, cosine per update), wd 4e-5, label smoothing 0.1, random crop (pad 4) + flip, BN
  recalibration on 500 training images, evaluation only after the last epoch; seeds 0, 1, 2. Segmentation: 300
  iterations of batch 8 on 400 training scenes, 100 validation scenes, seed 0.
* ``medium`` (4.7x the updates of ``small``: 6,000 training images, 6 epochs, ~560 updates; everything else as
  ``small``; segmentation 800 iterations of batch 8 on 800 scenes; ~2-10 min per run at one thread). Use
  ``--results results/medium`` to keep its runs and reports apart.
* ``large`` (one seed, for the trend with budget: 24,000 training images, 8 epochs, ~3,000 updates, 5.4x
  ``medium``; evaluation every 2 epochs so the log shows the curve; ~0.5-1.5 h per run at one thread).
* ``paper`` (the full protocol at this dataset's scale; ~days on 2 CPU cores, hours on one GPU): all 60,000
  training images, the whole 10,000-image test split, 100 epochs, batch 128, lr 0.05, 5 warm-up epochs, BN
  recalibration on 2,000 images, evaluation every 5 epochs; seeds 0-4. Segmentation: the shipped configs' 400
  iterations of batch 16 on 2,000 scenes, seeds 0-2.

Resumability: every run writes into ``results/runs/<name>/``. A run whose ``summary.json`` says ``finished``
(classification) or whose ``result.json`` exists (segmentation) is skipped; an interrupted classification run
restarts from its ``last.pth.tar`` (``--resume``), a segmentation run from mmengine's last checkpoint
(``--resume``). Runs go ``--jobs`` at a time, each a subprocess with one thread (tiny convolutions scale poorly
across threads, a 2-core machine runs two single-thread jobs at full speed); each run's output goes to its
``stdout.log``, progress lines (start / epoch / done / ETA) to this script's stdout.

At the end (and with ``--report-only``) the script writes ``results/results.json`` (every run and the aggregated
rows), ``results/results.md`` (markdown tables: top-1 mean +- sample std over seeds, MACs, multiplications, shifts,
additions, energy of the exported target network from the cost model, docs/algorithms.md §8) and
``results/accuracy_energy.png`` (mean top-1 vs energy, Pareto front marked) and ``results/curves.png`` (evaluated
top-1 and target training loss per epoch, mean over seeds; each classification run's per-epoch curve is also in
``results.json``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ -> the repro package

from repro import runs  # noqa: E402,F401 - tests patch tools/repro/runs.py through it
from repro.nas_stages import prepare_nas  # noqa: E402
from repro.paths import DEFAULT_RESULTS  # noqa: E402
from repro.plan import BUDGETS, GROUPS, Budget, RunSpec, expand_plan, parse_only  # noqa: E402,F401
from repro.report import (  # noqa: E402,F401
    PAIRS,
    aggregate,
    collect_results,
    format_markdown,
    paired_differences,
    write_reports,  # noqa: E402
)
from repro.runs import _finalize, build_command, execute_plan, run_status, run_test_evals  # noqa: E402,F401

__all__ = [
    "BUDGETS", "GROUPS", "PAIRS", "Budget", "RunSpec", "expand_plan", "run_status", "build_command", "execute_plan",
    "collect_results", "aggregate", "format_markdown", "paired_differences", "write_reports", "main",
]


# ----------------------------------------------------------------------------------------------------- CLI
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--budget", default="small", choices=sorted(BUDGETS), help="budget preset (default small)")
    p.add_argument("--only", default="", help=f"comma-separated experiment groups ({', '.join(GROUPS)}); default all")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--rows", default="", help="comma-separated row labels to keep (e.g. Shift,ShiftAug); default all")
    p.add_argument("--split", default="test", choices=("test", "holdout"),
                   help="evaluation split: 'test' (official test split, for reporting chosen settings) or 'holdout' "
                        "(val_subset images held out of the training split, for choosing settings); default test")
    p.add_argument("--test-eval", action="store_true",
                   help="with --split holdout: also evaluate the finished main-table runs (the chosen recipe) on the "
                        "official test images -> results_test.json / results_test.md")
    p.add_argument("--jobs", type=int, default=2, help="parallel single-thread runs (default 2)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default results/)")
    p.add_argument("--list", action="store_true", help="print the plan with each run's status and exit")
    p.add_argument("--report-only", action="store_true", help="only rebuild results.json/md/png from finished runs")
    p.add_argument("--no-plot", action="store_true", help="skip the accuracy-energy plot")
    p.add_argument("--nas-stages-only", action="store_true",
                   help="with nas-* groups: run the NAS stages (supernet, searches) and stop before training")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        groups = parse_only(args.only)
        budget = BUDGETS[args.budget]
        if args.split == "holdout":
            budget = replace(budget, holdout=True)
        rows = [r.strip() for r in args.rows.split(",") if r.strip()] or None
        plan = expand_plan(groups, budget, args.seeds, rows)
        if args.nas_stages_only and not any(g.startswith("nas-") for g in groups):
            raise ValueError("--nas-stages-only needs a nas-* group in --only (e.g. --only nas-mcunet)")
    except ValueError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    results_dir = Path(args.results)
    runs_dir = results_dir / "runs"
    if args.list:
        for spec in plan:
            print(f"{run_status(spec, runs_dir):>9}  {spec.group:<24} {spec.name}")
        return 0
    if any(g.startswith("seg") for g in groups) and not args.report_only:
        try:
            import mmcv.ops  # noqa: F401
            import mmseg  # noqa: F401
        except ImportError as err:
            print(f"reproduce: error: the segmentation groups need mmcv (with ops) and mmsegmentation ({err}); install "
                  "shiftaddaug_plugin[mmseg] or leave the seg* groups out of --only", file=sys.stderr)
            return 2
    if any(g.startswith("nas-") for g in groups) and not args.report_only:
        if not prepare_nas(results_dir, args.budget, budget):
            print("reproduce: error: a NAS stage failed (its log is named above); fix it and rerun: finished "
                  "stages are kept", file=sys.stderr)
            return 1
        if args.nas_stages_only:
            return 0
        missing = [s.name for s in plan if s.arch and not (results_dir / s.arch).is_file()]
        if missing:
            print(f"reproduce: {len(missing)} runs have no architecture file (the search found fewer feasible "
                  f"candidates): {', '.join(missing)}; skipped")
            plan = [s for s in plan if s.name not in missing]
    summary: dict[str, Any] = {}
    if not args.report_only:
        try:
            summary = execute_plan(plan, budget, runs_dir, jobs=args.jobs)
        except ValueError as err:
            print(f"reproduce: error: {err}", file=sys.stderr)
            return 2
    meta = {"last_invocation": summary, "groups": groups, "split": args.split}
    payload = write_reports(plan, runs_dir, results_dir, args.budget, meta, plot=not args.no_plot)
    print((results_dir / "results.md").read_text())
    if args.split == "holdout" and args.test_eval:
        run_test_evals(plan, budget, runs_dir)
        write_reports(plan, runs_dir, results_dir, args.budget, {"groups": groups}, plot=False, test_eval=True)
        print((results_dir / "results_test.md").read_text())
    print(f"reproduce: {payload['meta']['finished_runs']}/{len(plan)} runs finished; wrote {results_dir}/results.json, "
          f"results.md" + ("" if args.no_plot else ", accuracy_energy.png"))
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
