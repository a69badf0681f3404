"""Running the plan: one subprocess per run, resumable, --jobs at a time; test-split evaluations."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from repro.files import write_json_atomically
from repro.paths import CLS_CONFIG, REPO, SEG_CONFIGS, SEG_WITH_TEST_SPLIT
from repro.plan import _NETAUG_WIDTH, Budget, RunSpec
from repro.provenance import describe_environment, record_launch


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
        kwargs += [f"{key}={value}" for key, value in spec.model_kwargs]
        if spec.arch:  # a searched network: its arch file lies in the results folder (tools/repro/nas_stages.py)
            kwargs.append(f"arch={(runs_dir.parent / spec.arch).resolve()}")
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
        if spec.aug:  # NetAug's width list per model (docs/algorithms.md §4); the direct rows train the target alone
            cmd += ["--aug-width-mult-list", *[str(v) for v in _NETAUG_WIDTH[spec.model]]]
        else:
            cmd.append("--no-aug")
        cmd += list(spec.extra)  # ablation flags come last: argparse keeps the last value
        if (out / "last.pth.tar").is_file() and run_status(spec, runs_dir) == "partial":
            cmd += ["--resume", str(out / "last.pth.tar")]
        return cmd
    opts = seg_options(spec, budget)
    cmd = [sys.executable, str(REPO / "tools" / "train_mmseg.py"), str(SEG_CONFIGS[spec.model]), "--work-dir",
           str(out), "--cfg-options", *opts]
    if run_status(spec, runs_dir) == "partial":
        cmd.append("--resume")
    return cmd


def seg_options(spec: RunSpec, budget: Budget) -> list[str]:
    """``--cfg-options`` of a segmentation run: the budget's schedule, the row's operator / augmentation."""
    warmup = max(1, min(20, budget.seg_iters // 10))  # the config's 20-iteration linear warm-up, capped
    opts = [f"model.convert_cfg.op={spec.op}", f"randomness.seed={spec.seed}",
            f"train_cfg.max_iters={budget.seg_iters}", f"train_cfg.val_interval={budget.seg_iters}",
            f"param_scheduler.0.end={warmup}", f"param_scheduler.1.begin={warmup}",
            f"param_scheduler.1.end={budget.seg_iters}",
            f"default_hooks.checkpoint.interval={budget.seg_iters}",
            f"train_dataloader.batch_size={budget.seg_batch}",
            "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
            "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
            "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"]
    if spec.model not in SEG_WITH_TEST_SPLIT:  # generated scenes: the budget sets how many
        opts += [f"train_dataloader.dataset.num_images={budget.seg_train_images}",
                 f"val_dataloader.dataset.num_images={budget.seg_val_images}"]
    if not spec.aug:  # the direct baseline: same target network, no augmented channel, no augmented loss
        opts += ["model.alpha=0.0", "model.convert_cfg.aug_width_mult_list=[1.0]",
                 "model.convert_cfg.aug_expand_list=[1.0]", "custom_hooks.0.width_aug_end=0.0",
                 "custom_hooks.0.sort_interval=None"]
    return opts + list(spec.extra)  # an ablation row's own overrides come last (they win)


def seg_test_command(spec: RunSpec, budget: Budget, runs_dir: Path) -> list[str]:
    """Evaluate a finished segmentation run's exported MF target on its dataset's test split (mmseg's test.py)."""
    out = runs_dir / spec.name
    target = out / f"iter_{budget.seg_iters}_mf_target.pth"
    return [sys.executable, str(REPO / "tools" / "test_mmseg.py"), str(SEG_CONFIGS[spec.model]), str(target),
            "--work-dir", str(out / "test_eval"), "--cfg-options", *seg_options(spec, budget)]


def parse_miou(text: str) -> float | None:
    """The last ``mIoU: X`` mmengine printed (``None`` if none)."""
    found = [line for line in text.splitlines() if " mIoU: " in line]
    return float(found[-1].split(" mIoU: ")[1].split()[0]) if found else None


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


def _finalize(spec: RunSpec, runs_dir: Path, rc: int, wall_s: float | None = None) -> None:
    """After a segmentation run: ``result.json`` (mIoU, wall time of this invocation) so the run counts as
    finished."""
    if spec.kind != "seg" or rc != 0:
        return
    out = runs_dir / spec.name
    miou = _seg_miou(out)
    if miou is None:
        raise RuntimeError(f"{spec.name}: training ended without a validation mIoU in {out}/*/vis_data/scalars.json")
    result = {"status": "finished", "miou": miou, "wall_s": None if wall_s is None else round(wall_s, 1)}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def test_eval_command(spec: RunSpec, budget: Budget, runs_dir: Path) -> list[str]:
    """Evaluate a finished run's exported target on the official test images a ``--split test`` run would use."""
    out = runs_dir / spec.name
    cmd = [sys.executable, "-m", "shiftaddaug_plugin.train.cli",
           "--validate-exported", str(out / "exported_target.pth"),
           "--seed", str(spec.seed), "--workers", "0", "-b", str(budget.batch_size)]
    return cmd + (["--val-subset", str(budget.val_subset)] if budget.val_subset is not None else [])


def run_test_evals(plan: Sequence[RunSpec], budget: Budget, runs_dir: Path, *,
                   log: Callable[[str], None] = print) -> int:
    """After choosing on the held-out split: ``test_eval.json`` (official test top-1) for the finished runs of the
    main tables (the chosen recipe) and of the ``regime-`` groups (the main rows of another width), never for
    ablation rows. Returns how many were written."""
    written = 0
    for spec in plan:
        out = runs_dir / spec.name
        wanted = spec.group.startswith(("main-", "regime-")) if spec.kind == "cls" else \
            spec.group.startswith("seg") and spec.model in SEG_WITH_TEST_SPLIT  # main rows, never ablations
        if not wanted or run_status(spec, runs_dir) != "finished" or (out / "test_eval.json").is_file():
            continue
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if spec.kind == "seg":  # mmseg's test.py in a subprocess: the checkout's plugin first, as for training
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
            proc = subprocess.run(seg_test_command(spec, budget, runs_dir), capture_output=True, text=True, env=env,
                                  cwd=REPO)
            miou = parse_miou(proc.stdout + proc.stderr)
            name, result = "mIoU", None if miou is None else {"miou": miou}
        else:
            proc = subprocess.run(test_eval_command(spec, budget, runs_dir), capture_output=True, text=True, env=env)
            found = [line for line in proc.stdout.splitlines() if line.startswith("validate ") and " top1 " in line]
            name, result = "top1", None if not found else {
                "top1": float(found[-1].split(" top1 ")[1].split()[0]), "line": found[-1]}
        if proc.returncode != 0 or result is None:
            log(f"  test evaluation of {spec.name} failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        write_json_atomically(out / "test_eval.json", result, indent=2)
        log(f"  test {name} {spec.name}: {result[name.lower()]:.2f}")
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
    environment = describe_environment(REPO) if todo else {}
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
                        "Iter(val)" in text or " mIoU: " in text:
                    with lock:
                        log(f"  [{spec.name}] {text}")

    while queue or running:
        while queue and len(running) < jobs:
            spec = queue.pop(0)
            (runs_dir / spec.name).mkdir(parents=True, exist_ok=True)
            status = run_status(spec, runs_dir)
            cmd = command_fn(spec, budget, runs_dir)
            (runs_dir / spec.name / "command.txt").write_text(" ".join(cmd) + "\n")
            record_launch(runs_dir / spec.name, environment)
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
            took = time.perf_counter() - started
            try:
                _finalize(spec, runs_dir, rc, took)
            except RuntimeError as err:
                rc = rc or 1
                log(f"  {err}")
            done += 1
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
