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
* ``ablation-block-variant``: ShiftAug / AddAug with ``--block-variant linear`` (docs/algorithms.md §6); "off" = main table.
* ``ablation-aug-dims``: ShiftAug with width augmentation only (expand list ``[1.0]``) and expand augmentation only
  (width list ``[1.0]``); "both" = main table's ShiftAug.
  (All ablations use MCUNet.)
* ``seg``: MMSegmentation on the embedded Fashion-MNIST scenes (64 x 64, 11 classes), MobileNetV2-Tiny + FCN:
  Mult, Shift, ShiftAug, Add, AddAug, reported as mIoU (validation split after BN recalibration). Needs mmcv with
  compiled ops and mmsegmentation.

Budget presets (``--budget``), identical for every row, so rows differ only in the operator / augmentation:

* ``small`` (what fits on a shared 2-core CPU machine; ~1-4 min per run at one thread, adder runs longer: their
  kernels are compiled per layer shape on first use): 1,500 training images
  (a seeded random subset of the official training split; the subset depends on the seed, so the seed spread
  includes data sampling), evaluation on 2,000 images of the official test split, 5 epochs (~120 updates), batch 64, SGD Nesterov
  lr 0.05 (1 warm-up epoch, cosine per update), wd 4e-5, label smoothing 0.1, random crop (pad 4) + flip, BN
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
``results/accuracy_energy.png`` (mean top-1 vs energy, Pareto front marked).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
CLS_CONFIG = REPO / "configs" / "timm" / "fashion_mnist_mcunet_shiftaug.yaml"
SEG_CONFIG = REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"
DEFAULT_RESULTS = REPO / "results"

__all__ = [
    "BUDGETS", "GROUPS", "PAIRS", "Budget", "RunSpec", "expand_plan", "run_status", "build_command", "execute_plan",
    "collect_results", "aggregate", "format_markdown", "write_reports", "main",
]


# ----------------------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """Training budget shared by every row of a preset (see the module docstring)."""

    train_subset: int | None
    val_subset: int | None
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: int
    bn_recal_images: int
    eval_interval: int
    img_size: int
    seeds: tuple[int, ...]
    seg_iters: int
    seg_batch: int
    seg_train_images: int
    seg_val_images: int
    seg_seeds: tuple[int, ...]
    #: evaluate on ``val_subset`` images held out of the training split (``--split holdout``: choosing settings)
    #: instead of the official test split (reporting)
    holdout: bool = False


BUDGETS: dict[str, Budget] = {
    "small": Budget(train_subset=1500, val_subset=2000, epochs=5, batch_size=64, lr=0.05, warmup_epochs=1,
                    bn_recal_images=500, eval_interval=5, img_size=32, seeds=(0, 1, 2),
                    seg_iters=300, seg_batch=8, seg_train_images=400, seg_val_images=100, seg_seeds=(0,)),
    "medium": Budget(train_subset=6000, val_subset=2000, epochs=6, batch_size=64, lr=0.05, warmup_epochs=1,
                     bn_recal_images=500, eval_interval=6, img_size=32, seeds=(0, 1, 2),
                     seg_iters=800, seg_batch=8, seg_train_images=800, seg_val_images=100, seg_seeds=(0,)),
    "large": Budget(train_subset=24000, val_subset=2000, epochs=8, batch_size=64, lr=0.05, warmup_epochs=1,
                    bn_recal_images=500, eval_interval=2, img_size=32, seeds=(0,),
                    seg_iters=1600, seg_batch=8, seg_train_images=1600, seg_val_images=100, seg_seeds=(0,)),
    "paper": Budget(train_subset=None, val_subset=None, epochs=100, batch_size=128, lr=0.05, warmup_epochs=5,
                    bn_recal_images=2000, eval_interval=5, img_size=32, seeds=(0, 1, 2, 3, 4),
                    seg_iters=400, seg_batch=16, seg_train_images=2000, seg_val_images=300, seg_seeds=(0, 1, 2)),
}


# ----------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class RowSpec:
    """One table row: ``label`` plus the training flags that make it (operator, augmentation, ablation switch)."""

    label: str
    op: str
    aug: bool
    extra: tuple[str, ...] = ()
    convert_kwargs: tuple[tuple[str, Any], ...] = ()


_MAIN_ROWS: tuple[RowSpec, ...] = (
    RowSpec("Mult", "mult", False),
    RowSpec("NetAug", "mult", True),
    RowSpec("Shift", "shift", False),
    RowSpec("ShiftAug", "shift", True),
    RowSpec("Add", "adder", False),
    RowSpec("AddAug", "adder", True),
)
#: segmentation has no NetAug row (the multiplicative reference is enough there)
_SEG_ROWS: tuple[RowSpec, ...] = tuple(row for row in _MAIN_ROWS if row.label != "NetAug")

#: group -> (kind, model, rows). Ablation rows compare against the main table's row of the same seed.
GROUPS: dict[str, tuple[str, str, tuple[RowSpec, ...]]] = {
    "main-mcunet": ("cls", "shiftadd_mcunet", _MAIN_ROWS),
    "main-mbv2": ("cls", "shiftadd_mbv2_tiny", _MAIN_ROWS),
    "ablation-remap": ("cls", "shiftadd_mcunet", (
        RowSpec("AddAug+remap", "adder", True, convert_kwargs=(("remap", True),)),)),
    "ablation-block-variant": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug+block-variant", "shift", True, extra=("--block-variant", "linear")),
        RowSpec("AddAug+block-variant", "adder", True, extra=("--block-variant", "linear")))),
    "ablation-sort-scope": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug sort-augmented", "shift", True, extra=("--sort-scope", "augmented")),
        RowSpec("AddAug sort-augmented", "adder", True, extra=("--sort-scope", "augmented")))),
    "ablation-sort-remap": ("cls", "shiftadd_mcunet", (
        RowSpec("AddAug no-sort-remap", "adder", True, extra=("--no-sort-remap",)),)),
    "ablation-aug-dims": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug width-only", "shift", True, extra=("--aug-expand-list", "1.0")),
        RowSpec("ShiftAug expand-only", "shift", True, extra=("--aug-width-mult-list", "1.0")))),
    "seg": ("seg", "mbv2_tiny_fcn", _SEG_ROWS),
}
#: NetAug's width lists (docs/algorithms.md §4); the expand list [1.0, 1.6, 2.2, 2.8] comes from the yaml recipe
_NETAUG_WIDTH = {"shiftadd_mcunet": (1.0, 1.6, 2.2), "shiftadd_mbv2_tiny": (1.0, 1.8, 2.6)}
_SHORT_MODEL = {"shiftadd_mcunet": "mcunet", "shiftadd_mbv2_tiny": "mbv2tiny", "mbv2_tiny_fcn": "mbv2tinyfcn"}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the plan; ``name`` is its folder under ``results/runs``."""

    name: str
    group: str
    kind: str  # 'cls' | 'seg'
    model: str
    row: str
    seed: int
    op: str
    aug: bool
    extra: tuple[str, ...] = ()
    convert_kwargs: tuple[tuple[str, Any], ...] = ()


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """``'main-mcunet,seg'`` -> ``['main-mcunet', 'seg']`` (all groups if empty). ``ValueError`` on unknown names."""
    if only is None or only == "" or only == []:
        return list(GROUPS)
    items = only.split(",") if isinstance(only, str) else [p for o in only for p in o.split(",")]
    names = [i.strip() for i in items if i.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise ValueError(f"--only: unknown experiment group(s) {unknown}; choose from {', '.join(GROUPS)} "
                         "(comma separated)")
    return list(dict.fromkeys(names))


def expand_plan(groups: Sequence[str], budget: Budget, seeds: Sequence[int] | None = None,
                rows: Sequence[str] | None = None) -> list[RunSpec]:
    """Every run of ``groups`` (rows x seeds), seed-major so that partial results cover whole seeds first;
    ``rows`` keeps only the rows with those labels (``ValueError`` if a label matches no row of ``groups``)."""
    if rows is not None:
        known = {row.label for g in groups if g in GROUPS for row in GROUPS[g][2]}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"--rows: {unknown} match no row of groups {list(groups)}; rows there: {sorted(known)}")
    plan: list[RunSpec] = []
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown experiment group {group!r}; choose from {', '.join(GROUPS)}")
        kind, model, _ = GROUPS[group]
        group_seeds = tuple(seeds) if seeds is not None else (budget.seg_seeds if kind == "seg" else budget.seeds)
        for seed in group_seeds:
            for row in GROUPS[group][2]:
                if rows is not None and row.label not in rows:
                    continue
                name = f"{_SHORT_MODEL[model]}_{_slug(row.label)}_s{seed}" if kind == "cls" else \
                    f"seg_{_SHORT_MODEL[model]}_{_slug(row.label)}_s{seed}"
                plan.append(RunSpec(name=name, group=group, kind=kind, model=model, row=row.label, seed=int(seed),
                                    op=row.op, aug=row.aug, extra=row.extra, convert_kwargs=row.convert_kwargs))
    names = [r.name for r in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate run names in the plan: {sorted(n for n in names if names.count(n) > 1)}")
    return plan


# ----------------------------------------------------------------------------------------------------- runs
def run_status(spec: RunSpec, runs_dir: Path) -> str:
    """``'finished'`` | ``'partial'`` (a checkpoint to resume from) | ``'new'``."""
    out = runs_dir / spec.name
    if spec.kind == "cls":
        summary = out / "summary.json"
        if summary.is_file():
            try:
                if json.loads(summary.read_text()).get("status") == "finished":
                    return "finished"
            except json.JSONDecodeError:
                pass
        return "partial" if (out / "last.pth.tar").is_file() else "new"
    if (out / "result.json").is_file():
        return "finished"
    return "partial" if (out / "last_checkpoint").is_file() else "new"


def build_command(spec: RunSpec, budget: Budget, runs_dir: Path) -> list[str]:
    """The subprocess command of one run (``shiftaddaug-train`` / mmseg's ``train.py`` through our wrapper)."""
    out = runs_dir / spec.name
    if spec.kind == "cls":
        kwargs = [f"op={spec.op}"]
        if spec.convert_kwargs:
            kwargs.append("convert_kwargs=" + repr(dict(spec.convert_kwargs)).replace(" ", ""))
        cmd = [sys.executable, "-m", "shiftaddaug_plugin.train.cli", "-c", str(CLS_CONFIG),
               "--model", spec.model, "--model-kwargs", *kwargs,
               "--epochs", str(budget.epochs), "-b", str(budget.batch_size), "--lr", str(budget.lr),
               "--warmup-epochs", str(budget.warmup_epochs), "--img-size", str(budget.img_size),
               "--bn-recal-images", str(budget.bn_recal_images), "--eval-interval", str(budget.eval_interval),
               "--seed", str(spec.seed), "--workers", "0", "--log-interval", "0",
               "--output", str(runs_dir), "--experiment", spec.name]
        if budget.train_subset is not None:
            cmd += ["--train-subset", str(budget.train_subset)]
        if budget.holdout:
            cmd += ["--holdout-val", str(budget.val_subset or 5000)]
        elif budget.val_subset is not None:
            cmd += ["--val-subset", str(budget.val_subset)]
        if not spec.aug:
            cmd.append("--no-aug")
        cmd += ["--aug-width-mult-list", *[str(v) for v in _NETAUG_WIDTH[spec.model]]]  # docs/algorithms.md §4 per model
        cmd += list(spec.extra)  # ablation flags come last: argparse keeps the last value
        if (out / "last.pth.tar").is_file() and run_status(spec, runs_dir) == "partial":
            cmd += ["--resume", str(out / "last.pth.tar")]
        return cmd
    warmup = max(1, min(20, budget.seg_iters // 10))  # the config's 20-iteration linear warm-up, capped
    opts = [f"model.convert_cfg.op={spec.op}", f"randomness.seed={spec.seed}",
            f"train_cfg.max_iters={budget.seg_iters}", f"train_cfg.val_interval={budget.seg_iters}",
            f"param_scheduler.0.end={warmup}", f"param_scheduler.1.begin={warmup}",
            f"param_scheduler.1.end={budget.seg_iters}",
            f"default_hooks.checkpoint.interval={budget.seg_iters}",
            f"train_dataloader.batch_size={budget.seg_batch}",
            f"train_dataloader.dataset.num_images={budget.seg_train_images}",
            f"val_dataloader.dataset.num_images={budget.seg_val_images}",
            "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
            "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
            "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"]
    if not spec.aug:  # the direct baseline: same target network, no augmented channel, no augmented loss
        opts += ["model.alpha=0.0", "model.convert_cfg.aug_width_mult_list=[1.0]",
                 "model.convert_cfg.aug_expand_list=[1.0]", "custom_hooks.0.width_aug_end=0.0",
                 "custom_hooks.0.sort_interval=None"]
    cmd = [sys.executable, str(REPO / "tools" / "train_mmseg.py"), str(SEG_CONFIG), "--work-dir", str(out),
           "--cfg-options", *opts]
    if run_status(spec, runs_dir) == "partial":
        cmd.append("--resume")
    return cmd


def _seg_miou(out: Path) -> float | None:
    """Latest validation mIoU mmengine logged in ``<work_dir>/<timestamp>/vis_data/scalars.json`` (newest file,
    highest step; ``None`` if no validation ran)."""
    latest: tuple[float, float, float] | None = None  # (file mtime, step, mIoU)
    for path in out.glob("*/vis_data/scalars.json"):
        mtime = path.stat().st_mtime
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "mIoU" in rec:
                cand = (mtime, float(rec.get("step", 0)), float(rec["mIoU"]))
                if latest is None or cand[:2] >= latest[:2]:
                    latest = cand
    return None if latest is None else latest[2]


def _finalize(spec: RunSpec, runs_dir: Path, rc: int) -> None:
    """After a segmentation run: ``result.json`` (mIoU) so the run counts as finished."""
    if spec.kind != "seg" or rc != 0:
        return
    out = runs_dir / spec.name
    miou = _seg_miou(out)
    if miou is None:
        raise RuntimeError(f"{spec.name}: training ended without a validation mIoU in {out}/*/vis_data/scalars.json")
    (out / "result.json").write_text(json.dumps({"status": "finished", "miou": miou}, indent=2) + "\n")


def test_eval_command(spec: RunSpec, budget: Budget, runs_dir: Path) -> list[str]:
    """Evaluate a finished run's exported target on the official test images a ``--split test`` run would use."""
    out = runs_dir / spec.name
    cmd = [sys.executable, "-m", "shiftaddaug_plugin.train.cli", "--validate-exported", str(out / "exported_target.pth"),
           "--seed", str(spec.seed), "--workers", "0", "-b", str(budget.batch_size)]
    return cmd + (["--val-subset", str(budget.val_subset)] if budget.val_subset is not None else [])


def run_test_evals(plan: Sequence[RunSpec], budget: Budget, runs_dir: Path, *,
                   log: Callable[[str], None] = print) -> int:
    """After choosing on the held-out split: ``test_eval.json`` (official test top-1) for the finished runs of the
    main tables (the chosen recipe), never for ablation rows. Returns how many were written."""
    written = 0
    for spec in plan:
        out = runs_dir / spec.name
        if (spec.kind != "cls" or not spec.group.startswith("main-") or run_status(spec, runs_dir) != "finished"
                or (out / "test_eval.json").is_file()):
            continue
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run(test_eval_command(spec, budget, runs_dir), capture_output=True, text=True, env=env)
        found = [line for line in proc.stdout.splitlines() if line.startswith("validate ") and " top1 " in line]
        if proc.returncode != 0 or not found:
            log(f"  test evaluation of {spec.name} failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        top1 = float(found[-1].split(" top1 ")[1].split()[0])
        tmp = out / "test_eval.json.tmp"
        tmp.write_text(json.dumps({"top1": top1, "line": found[-1]}, indent=2) + "\n")
        tmp.replace(out / "test_eval.json")
        log(f"  test top1 {spec.name}: {top1:.2f}")
        written += 1
    return written


CommandFn = Callable[[RunSpec, Budget, Path], list[str]]


def execute_plan(plan: Sequence[RunSpec], budget: Budget, runs_dir: Path, *, jobs: int = 1,
                 command_fn: CommandFn = build_command, log: Callable[[str], None] = print,
                 poll_s: float = 0.5) -> dict[str, Any]:
    """Run the unfinished runs of ``plan``, ``jobs`` at a time (one thread each). Returns counts and failures.

    A finished run is skipped; a partial one resumes (``command_fn`` decides how). Progress: one line per start,
    per epoch line the child prints, per end (with the overall ETA)."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"--jobs={jobs!r} must be an integer >= 1")
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in plan if run_status(s, runs_dir) != "finished"]
    skipped = len(plan) - len(todo)
    log(f"reproduce: {len(plan)} runs planned, {skipped} already finished (skipped), {len(todo)} to run, "
        f"{jobs} at a time -> {runs_dir}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    running: list[tuple[RunSpec, subprocess.Popen, threading.Thread, float]] = []
    failed: list[str] = []
    done, t0 = 0, time.perf_counter()
    durations: list[float] = []
    queue = list(todo)
    lock = threading.Lock()

    def pump(spec: RunSpec, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with open(runs_dir / spec.name / "stdout.log", "a", encoding="utf-8") as handle:
            for line in proc.stdout:
                handle.write(line)
                handle.flush()
                text = line.rstrip()
                if text.startswith(("epoch ", "done:", "resumed", "ERROR", "shiftaddaug-train: error")) or \
                        "Iter(val)" in text or "mIoU" in text:
                    with lock:
                        log(f"  [{spec.name}] {text}")

    while queue or running:
        while queue and len(running) < jobs:
            spec = queue.pop(0)
            (runs_dir / spec.name).mkdir(parents=True, exist_ok=True)
            status = run_status(spec, runs_dir)
            cmd = command_fn(spec, budget, runs_dir)
            (runs_dir / spec.name / "command.txt").write_text(" ".join(cmd) + "\n")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            thread = threading.Thread(target=pump, args=(spec, proc), daemon=True)
            thread.start()
            running.append((spec, proc, thread, time.perf_counter()))
            with lock:
                log(f"[{done + len(running)}/{len(todo)}] start {spec.name} ({status})")
        time.sleep(poll_s)
        for item in list(running):
            spec, proc, thread, started = item
            rc = proc.poll()
            if rc is None:
                continue
            thread.join()
            running.remove(item)
            try:
                _finalize(spec, runs_dir, rc)
            except RuntimeError as err:
                rc = rc or 1
                log(f"  {err}")
            done += 1
            took = time.perf_counter() - started
            durations.append(took)
            remaining = len(queue) + len(running)
            eta = statistics.mean(durations) * remaining / jobs
            ok = rc == 0 and run_status(spec, runs_dir) == "finished"
            if not ok:
                failed.append(spec.name)
            with lock:
                log(f"[{done}/{len(todo)}] {'done' if ok else f'FAILED (rc {rc})'} {spec.name} in {took:.0f}s | "
                    f"elapsed {time.perf_counter() - t0:.0f}s, eta ~{eta:.0f}s"
                    + ("" if ok else f" (see {runs_dir / spec.name / 'stdout.log'})"))
    return {"planned": len(plan), "skipped": skipped, "ran": len(todo), "failed": failed,
            "wall_s": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------------------------------- results
def collect_results(plan: Sequence[RunSpec], runs_dir: Path, *, test_eval: bool = False) -> list[dict[str, Any]]:
    """One record per *finished* run of ``plan``: spec fields + metric (top-1 % or mIoU %) + cost totals.
    ``test_eval``: the metric is the official test top-1 of ``test_eval.json`` (runs without one are left out)."""
    records: list[dict[str, Any]] = []
    for spec in plan:
        if run_status(spec, runs_dir) != "finished":
            continue
        out = runs_dir / spec.name
        if test_eval and not (out / "test_eval.json").is_file():
            continue
        rec: dict[str, Any] = {k: v for k, v in asdict(spec).items() if k not in ("extra", "convert_kwargs")}
        rec["flags"] = list(spec.extra) + [f"{k}={v}" for k, v in spec.convert_kwargs]
        if spec.kind == "cls":
            summary = json.loads((out / "summary.json").read_text())
            rec["metric"] = float(summary["exported_top1"])
            rec["metric_name"] = "top1"
            rec["eval_top1"] = float(summary.get("eval_top1", rec["metric"]))
            rec["export_matches_eval"] = summary.get("export_matches_eval")
            rec["train_time_s"] = summary.get("train_time_s")
            if test_eval:
                rec["holdout_top1"] = rec["metric"]
                rec["metric"] = rec["eval_top1"] = float(json.loads((out / "test_eval.json").read_text())["top1"])
            cost = summary.get("cost") or {}
            for key in ("macs", "mults", "shifts", "adds", "params", "energy_uj"):
                rec[key] = cost.get(key)
        else:
            rec["metric"] = float(json.loads((out / "result.json").read_text())["miou"])  # mmseg logs mIoU in %
            rec["metric_name"] = "mIoU"
        records.append(rec)
    return records


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (group, model, row): mean, sample std (n-1; 0 for one seed), n, seeds, per-seed values, costs."""
    order: list[tuple[str, str, str]] = []
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        key = (rec["group"], rec["model"], rec["row"])
        if key not in by_key:
            order.append(key)
            by_key[key] = []
        by_key[key].append(rec)
    rows: list[dict[str, Any]] = []
    for key in order:
        recs = sorted(by_key[key], key=lambda r: r["seed"])
        values = [r["metric"] for r in recs]
        row: dict[str, Any] = {
            "group": key[0], "model": key[1], "row": key[2], "metric_name": recs[0]["metric_name"],
            "n": len(values), "seeds": [r["seed"] for r in recs], "values": values,
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        for cost_key in ("macs", "mults", "shifts", "adds", "params", "energy_uj"):
            row[cost_key] = recs[0].get(cost_key)
        rows.append(row)
    return rows


#: (a, b) row pairs reported as paired differences ``a - b``: the paper's claims, then each ablation against the
#: main-table row it switches one thing off in (same model, same seeds, same recipe).
PAIRS: tuple[tuple[str, str], ...] = (
    ("NetAug", "Mult"), ("ShiftAug", "Shift"), ("AddAug", "Add"),
    ("AddAug+remap", "AddAug"),
    ("ShiftAug sort-augmented", "ShiftAug"), ("AddAug sort-augmented", "AddAug"),
    ("AddAug no-sort-remap", "AddAug"),
    ("ShiftAug+block-variant", "ShiftAug"), ("AddAug+block-variant", "AddAug"),
    ("ShiftAug width-only", "ShiftAug"), ("ShiftAug expand-only", "ShiftAug"),
)


def paired_differences(records: Sequence[dict[str, Any]],
                       pairs: Sequence[tuple[str, str]] = PAIRS) -> list[dict[str, Any]]:
    """``a - b`` per seed (same seed = same data subset and initial RNG) for each (a, b) row pair and model: mean,
    std, and how many seeds ``a`` won. ``group`` is the group of row ``a`` (an ablation row is compared with the
    main table's row of the same model)."""
    out: list[dict[str, Any]] = []
    metric = {(r["model"], r["row"], r["seed"]): r["metric"] for r in records}
    group_of = {(r["model"], r["row"]): r["group"] for r in records}
    for model in dict.fromkeys(r["model"] for r in records):
        for a, b in pairs:
            seeds = sorted(s for (m, row, s) in metric if m == model and row == a and (model, b, s) in metric)
            if not seeds:
                continue
            diffs = [metric[(model, a, s)] - metric[(model, b, s)] for s in seeds]
            out.append({"group": group_of[(model, a)], "model": model, "a": a, "b": b, "seeds": seeds,
                        "diffs": diffs, "mean": statistics.fmean(diffs),
                        "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                        "wins": sum(d > 0 for d in diffs)})
    return out


def _fmt_int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _fmt_energy(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def format_markdown(rows: Sequence[dict[str, Any]], diffs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown report: one table per group, then paired differences."""
    lines = ["# ShiftAddAug reproduction (offline data)", ""]
    lines.append(f"Budget `{meta['budget']}`: " + ", ".join(f"{k}={v}" for k, v in meta["budget_settings"].items()
                                                           if not k.startswith("seg_") and k not in ("seeds", "holdout")))
    split = meta.get("split", "test")
    lines.append("")
    lines.append("Evaluation split: " + ("**held-out validation** images of the training split (choosing settings)"
                                         if split == "holdout" else "official **test** split (reporting)") + "."
                 + (" The runs are those of the held-out table (trained without the held-out images, settings "
                    "chosen there); only the main-table rows are evaluated on the test split."
                    if meta.get("test_of_holdout_runs") else ""))
    lines.append("")
    lines.append("Top-1 / mIoU of the **exported** target network (%), mean +- sample std over seeds (n = seeds). "
                 "Costs per image of the exported network (cost model `shiftaddaug_plugin.cost`, fp32 energy table).")
    lines.append("")
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        lines.append(f"## {group} ({members[0]['model']})")
        lines.append("")
        metric = members[0]["metric_name"]
        if members[0]["metric_name"] == "top1":
            lines.append(f"| row | {metric} (%) | n | per seed | MACs | mults | shifts | adds | energy (uJ) |")
            lines.append("|---|---:|---:|---|---:|---:|---:|---:|---:|")
            for r in members:
                lines.append(f"| {r['row']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                             f"{', '.join(f'{v:.2f}' for v in r['values'])} | {_fmt_int(r['macs'])} | "
                             f"{_fmt_int(r['mults'])} | {_fmt_int(r['shifts'])} | {_fmt_int(r['adds'])} | "
                             f"{_fmt_energy(r['energy_uj'])} |")
        else:
            lines.append(f"| row | {metric} (%) | n | per seed |")
            lines.append("|---|---:|---:|---|")
            for r in members:
                lines.append(f"| {r['row']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                             f"{', '.join(f'{v:.2f}' for v in r['values'])} |")
        lines.append("")
    if diffs:
        lines.append("## Paired differences (same seed = same data subset and initialisation RNG)")
        lines.append("")
        lines.append("| group | comparison | mean diff (points) | std | wins / seeds | per seed |")
        lines.append("|---|---|---:|---:|---:|---|")
        for d in diffs:
            lines.append(f"| {d['group']} | {d['a']} - {d['b']} | {d['mean']:+.2f} | {d['std']:.2f} | "
                         f"{d['wins']}/{len(d['seeds'])} | {', '.join(f'{v:+.2f}' for v in d['diffs'])} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(plan: Sequence[RunSpec], runs_dir: Path, results_dir: Path, budget_name: str,
                  extra_meta: dict[str, Any] | None = None, plot: bool = True, *,
                  test_eval: bool = False) -> dict[str, Any]:
    """``results.json``, ``results.md`` and ``accuracy_energy.png`` from the finished runs of ``plan``;
    ``test_eval`` (after ``--split holdout``): ``results_test.json`` / ``results_test.md`` with the official test
    top-1 of the main-table runs (:func:`run_test_evals`), the held-out reports left as they are."""
    records = collect_results(plan, runs_dir, test_eval=test_eval)
    rows = aggregate(records)
    diffs = paired_differences(records)
    meta = {"budget": budget_name, "budget_settings": asdict(BUDGETS[budget_name]),
            "finished_runs": len(records), "planned_runs": len(plan), **(extra_meta or {})}
    if test_eval:
        meta["split"] = "test"
        meta["test_of_holdout_runs"] = True
    stem = "results_test" if test_eval else "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": rows, "paired_differences": diffs, "runs": records}
    tmp = results_dir / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(results_dir / f"{stem}.json")
    (results_dir / f"{stem}.md").write_text(format_markdown(rows, diffs, meta) + "\n")
    if test_eval:
        return payload
    points = [{"name": f"{r['row']} ({_SHORT_MODEL.get(r['model'], r['model'])})", "accuracy": r["mean"],
               "energy": r["energy_uj"], "group": r["model"]}
              for r in rows if r["metric_name"] == "top1" and r.get("energy_uj") is not None
              and r["group"].startswith("main-")]  # ablation rows share their main row's cost: tables only
    if plot and points:
        from shiftaddaug_plugin.cost import plot_pareto

        plot_pareto(points, results_dir / "accuracy_energy.png",
                    title=f"Fashion-MNIST, exported targets ({budget_name} budget)", log_energy=True)
    return payload


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
    except ValueError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    results_dir = Path(args.results)
    runs_dir = results_dir / "runs"
    if args.list:
        for spec in plan:
            print(f"{run_status(spec, runs_dir):>9}  {spec.group:<24} {spec.name}")
        return 0
    if "seg" in groups and not args.report_only:
        try:
            import mmcv.ops  # noqa: F401
            import mmseg  # noqa: F401
        except ImportError as err:
            print(f"reproduce: error: the 'seg' group needs mmcv (with ops) and mmsegmentation ({err}); install "
                  "shiftaddaug_plugin[mmseg] or leave 'seg' out of --only", file=sys.stderr)
            return 2
    summary: dict[str, Any] = {}
    if not args.report_only:
        try:
            summary = execute_plan(plan, budget, runs_dir, jobs=args.jobs)
        except ValueError as err:
            print(f"reproduce: error: {err}", file=sys.stderr)
            return 2
    payload = write_reports(plan, runs_dir, results_dir, args.budget, {"last_invocation": summary,
                                                                       "groups": groups, "split": args.split}, plot=not args.no_plot)
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
