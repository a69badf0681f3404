"""``shiftaddaug-train``: ShiftAddAug augmentation training of a timm model (docs/algorithms.md §4,
docs/ARCHITECTURE.md).

    shiftaddaug-train -c configs/timm/fashion_mnist_mcunet_shiftaug.yaml --output runs/demo
    torchrun --nproc_per_node 2 -m shiftaddaug_plugin.train.cli -c ... --device cpu     # DDP (gloo on CPU)

Per epoch: block-variant switch (optional) -> channel sorting at the epoch start while width augmentation is on
(optimizer state and EMA permuted alike) -> joint-loss training (:mod:`.augtrain`) -> BN recalibration of the
target network on ``--bn-recal-images`` training images -> evaluation in ``Mode.TARGET`` -> ``summary.csv`` row and
checkpoints (``last.pth.tar``, ``model_best.pth.tar``). At the end: ``export`` -> ``exported_target.pth`` + ``.json``
-> the exported network is rebuilt from those files with ``timm.create_model`` and evaluated (its top-1 must equal
the last evaluation's) -> operator counts of the exported network (cost model) -> ``summary.json``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from shiftaddaug_plugin.augment import AugSchedule, RecalibratedBN, WidthSampler, nonfinite_entries
from shiftaddaug_plugin.block_variant import (
    BlockVariantSchedule,
    set_all_mf,
    switchable_layers,
)
from shiftaddaug_plugin.convert import (
    export,
    recalibrate_bn,
    sort_channels,
)
from shiftaddaug_plugin.convert.plan import PLAN_ATTR
from shiftaddaug_plugin.cost import count_ops
from shiftaddaug_plugin.sharing import pretrain_remap, remap_modules

from .args import parse_args
from .augtrain import (
    NonFiniteLossError,
    ShiftAddAugTask,
    evaluate,
    format_eta,
    train_one_epoch,
    unwrap,
)
from .build import build_model
from .checkpoint import (
    EXPORTED_META,
    EXPORTED_WEIGHTS,
    atomic_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    load_exported,
    load_state,
    restore_rng_state,
    save_exported,
)
from .data import build_data
from .diagnostics_log import log_sort_diagnostics, log_switch_diagnostics
from .distributed import broadcast_buffers, check_ranks_identical, cleanup, perm_digest, state_checksum

__all__ = ["main", "run", "validate_exported", "build_model", "aug_schedule", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("epoch", "train_loss_target", "train_loss_aug", "train_top1", "eval_top1", "eval_loss",
                  "eval_ema_top1", "lr", "width_aug", "mf_layers", "time")
LAST, BEST = "last.pth.tar", "model_best.pth.tar"


def aug_schedule(args: argparse.Namespace) -> AugSchedule:
    """The shared schedule (:class:`shiftaddaug_plugin.augment.AugSchedule`) over ``--epochs`` epochs: width
    augmentation until ``--width-aug-stop``, sorting every ``--sort-interval`` epochs, block-variant progress until
    ``--block-variant-end`` (``--block-variant linear``)."""
    return AugSchedule(total=int(args.epochs), augment=not args.no_aug, width_aug_stop=float(args.width_aug_stop),
                       sort_interval=args.sort_interval or None,
                       block_variant_end=float(args.block_variant_end) if args.block_variant == "linear" else None)


class _Logger:
    def __init__(self, enabled: bool, path: Path | None = None) -> None:
        self.enabled = enabled
        self.path = path

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        print(message, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(message + "\n")


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, torch.device):
            value = str(value)
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = value
    return out


def _write_summary_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_FIELDS), extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_FIELDS})
    atomic_write_text(buf.getvalue(), path)


def _has_bn(model: nn.Module) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


def _apply_block_variant(schedule: BlockVariantSchedule | None, model: nn.Module, epoch: int,
                         optimizer: Any = None) -> int:
    """``mf_enabled`` of ``model``'s switchable layers for ``epoch`` (docs/algorithms.md §6): ``--block-variant none``
    (``schedule`` None) -> all MF; ``linear`` -> the schedule's shallow prefix. ``model`` may be the scheduled model
    or its EMA copy; layers switching at ``epoch`` are remapped (eq. 5) unless ``--no-block-variant-remap``.
    Returns the number of MF layers."""
    if schedule is None:
        return set_all_mf(model)
    return schedule.apply(epoch, model, optimizer=optimizer)


def _recalibrate(model: nn.Module, loader: Any, device: torch.device) -> int:
    """BN recalibration of the target network (docs/algorithms.md §4) over the whole (fixed) recalibration subset."""

    if not _has_bn(model):
        return 0
    return recalibrate_bn(model, loader, len(loader.dataset), device=device)


def _output_dir(args: argparse.Namespace) -> Path:
    if args.resume and not args.output and not args.experiment:
        return Path(args.resume).resolve().parent
    base = Path(args.output or "output/train")
    name = args.experiment or f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model}"
    return base / name


# ------------------------------------------------------------------------------------------------- run
def _prepare_remaps(model: torch.nn.Module, args: argparse.Namespace, loader: Any, *,
                    resuming: bool, distributed: bool, log: Callable[[str], None]) -> None:
    """Eq. 5's ``FC`` is pre-trained, then frozen for augmented training (docs/algorithms.md §5); before the optimizer
    exists,
    so that frozen remap parameters never enter it. Trained jointly with SGD instead, the FC maps (one scalar per
    pointwise layer, fed by thousands of filters' adder gradients) blew the adder weights up within an epoch
    (loss 1e5). On resume the checkpoint's remaps are frozen already: freeze the fresh ones to match."""

    layers = remap_modules(model)
    remaps = list({id(m.remap): m.remap for m in layers}.values())
    if not remaps or all(r.frozen for r in remaps):
        return
    if args.remap_pretrain_steps < 0:
        raise ValueError(f"--remap-pretrain-steps must be >= 0, got {args.remap_pretrain_steps}")
    if resuming or args.remap_pretrain_steps == 0 or not any(True for r in remaps for _ in r.parameters()):
        for r in remaps:
            r.freeze()
        log(f"remap: {len(layers)} remapped adder layers, FC frozen "
            f"({'resuming' if resuming else 'no pre-training'})")
        return

    t0 = time.perf_counter()
    losses = pretrain_remap(model, loader, lambda out, y: torch.nn.functional.cross_entropy(out, y),
                            steps=args.remap_pretrain_steps, lr=args.remap_pretrain_lr)
    if distributed:  # ranks saw different batches: adopt rank 0's maps
        for r in remaps:
            for p in r.parameters():
                torch.distributed.broadcast(p.data, 0)
    log(f"remap: pre-trained the FC of {len(layers)} remapped adder layers for {len(losses)} steps "
        f"(loss {losses[0]:.4f} -> {losses[-1]:.4f}, {time.perf_counter() - t0:.1f}s), then froze them")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, export; returns the final summary (also written to ``summary.json``)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import init_distributed_device, random_seed

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = init_distributed_device(args)
    if args.amp and device.type == "cpu" and args.amp_dtype == "float16":
        raise ValueError("--amp with float16 needs a CUDA device (CPU autocast runs float16 convolutions slower than "
                         "float32); drop --amp on CPU or use --amp-dtype bfloat16")
    distributed, rank, world = bool(args.distributed), int(args.rank), int(args.world_size)
    main_proc = rank == 0
    random_seed(args.seed, rank)
    sampler = WidthSampler(int(args.seed))  # widths of a step depend on (seed, step) only: same on every rank
    schedule = aug_schedule(args)

    data = build_data(args, rank=rank, world_size=world)
    model, rebuild_meta = build_model(args, data.num_classes, data.input_size)
    ckpt: dict[str, Any] = {}
    if args.resume:  # a bad --resume fails before anything is written into the output folder
        ckpt = load_checkpoint(args.resume)
        if ckpt.get("arch") != args.model:
            raise ValueError(f"--resume {args.resume} holds a {ckpt.get('arch')!r} model, not --model {args.model!r}")
        load_state(model, ckpt["state_dict"], args.resume,
                   "resume with the same --model and --model-kwargs as the run that wrote it")

    out_dir = _output_dir(args)
    if main_proc:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = _Logger(main_proc, out_dir / "log.txt")
    log(f"shiftaddaug-train: model {args.model} dataset {args.dataset} device {device} world_size {world} -> {out_dir}")
    rebuild_meta.update(mean=list(data.mean), std=list(data.std), dataset=args.dataset)
    model.to(device)
    augment = not args.no_aug
    n_switch = len(switchable_layers(model))
    if args.block_variant != "none" and n_switch == 0:
        raise ValueError("--block-variant needs multiplication-free target layers; the model has none "
                         "(op=mult?). Use --model-kwargs op=shift/adder/shiftadd or --block-variant none")
    # docs/algorithms.md §6: 'linear' turns the target MF shallow -> deep over epochs [0, schedule end]
    bv_end = schedule.block_variant_end_step
    plan = getattr(model, PLAN_ATTR, None)
    prior_std = (plan.config.adder_init_std if plan is not None else None) or 1.0
    bv_schedule = (BlockVariantSchedule(model, start=0, end=bv_end, unit="epoch", remap=args.block_variant_remap,
                                        adder_prior_std=prior_std) if bv_end is not None else None)

    _prepare_remaps(model, args, data.train_loader, resuming=bool(args.resume), distributed=distributed,
                    log=log)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, filter_bias_and_bn=True,
                                    **({"eps": args.opt_eps} if args.opt_eps is not None else {}))
    task = ShiftAddAugTask(model, alpha=args.aug_alpha, augment=augment, sampler=sampler,
                           criterion_kwargs={"smoothing": args.smoothing}, device=device)
    ema = task.setup_ema(decay=args.model_ema_decay, device=device) if args.model_ema else None

    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    amp_ctx: Callable[[], Any] = (partial(torch.autocast, device_type=device.type, dtype=amp_dtype)
                                  if args.amp else nullcontext)
    scaler = torch.amp.GradScaler("cuda") if (args.amp and device.type == "cuda" and amp_dtype == torch.float16) \
        else None

    updates_per_epoch = len(data.train_loader)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=updates_per_epoch)

    start_epoch, num_updates = 0, 0
    history: list[dict[str, Any]] = []
    best_top1, best_epoch = -1.0, -1
    if args.resume:
        load_state(model, ckpt["state_dict"], args.resume,  # again: the remap preparation may have touched it
                   "resume with the same --model and --model-kwargs as the run that wrote it")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            if "state_dict_ema" not in ckpt:
                raise ValueError(f"--resume {args.resume} has no EMA weights; drop --model-ema or resume a run "
                                 "trained with it")
            ema.module.load_state_dict(ckpt["state_dict_ema"])
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, num_updates = int(ckpt["epoch"]), int(ckpt["num_updates"])
        history = list(ckpt.get("history", []))
        best_top1, best_epoch = float(ckpt.get("best_top1", -1.0)), int(ckpt.get("best_epoch", -1))
        if rank == 0:
            restore_rng_state(ckpt["rng"])
        else:  # other ranks: their own streams, reproducible per (seed, rank, epoch); widths need no state
            random_seed(args.seed + 1000 * start_epoch, rank)
        log(f"resumed from {args.resume} at epoch {start_epoch} (updates {num_updates})")
        if start_epoch > args.epochs:
            raise ValueError(f"--resume checkpoint already finished {start_epoch} epochs, more than --epochs "
                             f"{args.epochs}; raise --epochs to at least {start_epoch}")
        if start_epoch == args.epochs:  # killed after the last epoch, before the export: finish the run
            log(f"all {args.epochs} epochs were already trained; evaluating and exporting")
    if distributed:
        task.prepare_distributed(device_ids=[device.index] if device.type == "cuda" else None)

    recalibrated = partial(RecalibratedBN, lambda m: _recalibrate(m, data.recal_loader, device))
    log(f"epochs {args.epochs} | updates/epoch {updates_per_epoch} | width augmentation until epoch "
        f"{schedule.width_end} | "
        f"augment {augment} alpha {args.aug_alpha} | block-variant {args.block_variant} ({n_switch} MF layers) | "
        f"bn recalibration on {len(data.recal_loader.dataset)} images")

    last_eval: dict[str, float] | None = None
    epochs_this_run, interrupted = 0, False
    t_start = time.perf_counter()
    for epoch in range(start_epoch, args.epochs):
        t_epoch = time.perf_counter()
        plan = schedule.at(epoch)
        width_on = plan.width_aug
        if args.sort_diagnostics and main_proc and bv_schedule is not None:
            log_switch_diagnostics(bv_schedule, epoch, data.recal_loader, device,
                                   out_dir / "switch_diagnostics.jsonl", log)
        mf_layers = _apply_block_variant(bv_schedule, model, epoch, optimizer)
        if ema is not None:
            _apply_block_variant(bv_schedule, ema.module, epoch)
        if plan.sort:  # after a training cycle, while width augmentation is on
            if args.sort_diagnostics and main_proc:
                log_sort_diagnostics(model, data.recal_loader, device, args.sort_scope, epoch,
                                     out_dir / "sort_diagnostics.jsonl", log)
            sort_stats: dict[str, int] = {}
            perms = sort_channels(model, optimizer=optimizer, ema=ema, scope=args.sort_scope,
                                  remap_moved=args.sort_remap, stats=sort_stats)
            if distributed:
                check_ranks_identical(perm_digest(perms), "channel sorting")
            log(f"epoch {epoch}: sorted mid channels of {len(perms)} groups (scope {args.sort_scope}): "
                f"{sort_stats['channels_moved']} channels moved into the target, "
                f"{sort_stats['entries_remapped']} weights remapped")
        if data.train_sampler is not None:
            data.train_sampler.set_epoch(epoch)
        task.width_aug = width_on
        try:
            train_metrics, num_updates = train_one_epoch(
                task, data.train_loader, optimizer, epoch=epoch, device=device, scheduler=scheduler,
                sched_on_updates=args.sched_on_updates, num_updates=num_updates, amp_ctx=amp_ctx, scaler=scaler,
                clip_grad=args.clip_grad, log_interval=args.log_interval, distributed=distributed, world_size=world,
                log=log, max_nonfinite=args.max_nonfinite_steps)
        except NonFiniteLossError as err:
            log(f"ERROR: {err}")
            raise
        if distributed:  # BN statistics of the last local forward differ per rank (DDP syncs them at forward)
            broadcast_buffers(unwrap(model))
        bad = nonfinite_entries(unwrap(model).state_dict())
        if bad:  # the losses stayed finite but the weights overflowed: never checkpoint them
            err = NonFiniteLossError(
                f"non-finite weights after epoch {epoch} ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
                "not saved: the last checkpoint (last.pth.tar) is intact. Lower --lr or add --clip-grad")
            log(f"ERROR: {err}")
            raise err
        lr = optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {
            "epoch": epoch, "train_loss_target": round(train_metrics["loss_target"], 6),
            "train_loss_aug": round(train_metrics["loss_aug"], 6) if augment else None,
            "train_top1": round(train_metrics["top1"], 4), "lr": lr, "width_aug": int(width_on),
            "mf_layers": mf_layers, "eval_top1": None, "eval_loss": None, "eval_ema_top1": None,
        }
        if (epoch + 1) % args.eval_interval == 0 or epoch + 1 == args.epochs:
            # recalibrated target statistics for evaluation only: checkpoints keep the training statistics
            with recalibrated(unwrap(model), *([ema.module] if ema is not None else [])):
                last_eval = evaluate(model, data.eval_loader, device, distributed=distributed, amp_ctx=amp_ctx)
                row.update(eval_top1=round(last_eval["top1"], 4), eval_loss=round(last_eval["loss"], 6))
                if ema is not None:
                    ema_eval = evaluate(ema.module, data.eval_loader, device, distributed=distributed,
                                        amp_ctx=amp_ctx)
                    row["eval_ema_top1"] = round(ema_eval["top1"], 4)
        if not args.sched_on_updates:
            scheduler.step(epoch + 1, row["eval_top1"])
        row["time"] = round(time.perf_counter() - t_epoch, 3)
        history.append(row)
        improved = row["eval_top1"] is not None and row["eval_top1"] > best_top1
        if improved:
            best_top1, best_epoch = float(row["eval_top1"]), epoch
        if main_proc:
            ckpt = {
                "epoch": epoch + 1, "arch": args.model, "num_updates": num_updates,
                "state_dict": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": capture_rng_state(), "history": history,
                "best_top1": best_top1, "best_epoch": best_epoch, "args": _plain_args(args),
                "export_meta": rebuild_meta, "version": 1,
            }
            if ema is not None:
                ckpt["state_dict_ema"] = ema.module.state_dict()
            if scaler is not None:
                ckpt["scaler"] = scaler.state_dict()
            atomic_save(ckpt, out_dir / LAST)
            if improved:
                atomic_save(ckpt, out_dir / BEST)
            _write_summary_csv(out_dir / "summary.csv", history)
        elapsed = time.perf_counter() - t_start
        epochs_this_run += 1
        eta = elapsed / epochs_this_run * (args.epochs - epoch - 1)
        eval_txt = (f"eval top1 {row['eval_top1']:.2f} loss {row['eval_loss']:.4f}" if row["eval_top1"] is not None
                    else "no eval")
        aug_txt = f"loss_aug {row['train_loss_aug']:.4f} " if augment else ""
        log(f"epoch {epoch + 1}/{args.epochs}: loss_t {row['train_loss_target']:.4f} {aug_txt}train top1 "
            f"{row['train_top1']:.2f} | {eval_txt} | lr {lr:.3e} | width_aug {int(width_on)} | {row['time']:.1f}s, "
            f"eta {format_eta(eta)}")
        if args.stop_after_epochs is not None and epochs_this_run >= args.stop_after_epochs and epoch + 1 < args.epochs:
            interrupted = True
            log(f"stopping after {epochs_this_run} epoch(s) as requested (--stop-after-epochs); resume with "
                f"--resume {out_dir / LAST}")
            break

    summary: dict[str, Any] = {"status": "interrupted" if interrupted else "finished", "epochs_done": len(history),
                               "output": str(out_dir), "best_top1": best_top1, "best_epoch": best_epoch,
                               "train_time_s": round(time.perf_counter() - t_start, 3)}
    if distributed:
        summary["ddp_rank_checksums"] = check_ranks_identical(state_checksum(unwrap(model)), "training")
    if interrupted:
        if main_proc:
            atomic_write_text(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
        cleanup(distributed)
        return summary

    # ---------------------------------------------------------------------------------------------- export
    bare = unwrap(model)
    set_all_mf(bare)  # the schedule ends fully MF; make sure nothing is left multiplicative
    with recalibrated(bare):  # the exported target carries the recalibrated statistics of the last evaluation
        if last_eval is None:  # a resumed run whose last epoch was already trained
            last_eval = evaluate(bare, data.eval_loader, device, distributed=distributed, amp_ctx=amp_ctx)
        slim = export(bare) if getattr(bare, PLAN_ATTR, None) is not None else copy.deepcopy(bare)
    summary.update(eval_top1=last_eval["top1"], eval_loss=last_eval["loss"], eval_images=last_eval["count"])
    if main_proc:
        save_exported(out_dir, slim, rebuild_meta)
    if distributed:
        dist.barrier()
    rebuilt, _ = load_exported(out_dir / EXPORTED_WEIGHTS, device=device)
    exported_eval = evaluate(rebuilt, data.eval_loader, device, distributed=distributed, amp_ctx=amp_ctx)
    summary.update(exported_top1=exported_eval["top1"], exported_loss=exported_eval["loss"],
                   export_matches_eval=exported_eval["top1"] == last_eval["top1"])
    if not summary["export_matches_eval"]:
        log(f"WARNING: exported model top1 {exported_eval['top1']:.4f} != last evaluation {last_eval['top1']:.4f}")
    summary["exported"] = {"weights": str(out_dir / EXPORTED_WEIGHTS), "meta": str(out_dir / EXPORTED_META),
                           **rebuild_meta}
    summary["cost"] = _cost_summary(rebuilt, data.input_size, log)
    if main_proc:
        atomic_write_text(json.dumps(summary, indent=2, default=str) + "\n", out_dir / "summary.json")
    cost_txt = ""
    if summary["cost"]:
        c = summary["cost"]
        cost_txt = f" | exported: mults {c['mults']:,} shifts {c['shifts']:,} adds {c['adds']:,} " \
                   f"energy {c['energy_uj']:.3f} uJ"
    log(f"done: eval top1 {last_eval['top1']:.2f} | exported top1 {exported_eval['top1']:.2f}{cost_txt} -> {out_dir}")
    cleanup(distributed)
    return summary


def validate_exported(args: argparse.Namespace) -> dict[str, Any]:
    """``--validate-exported PATH`` (timm ``validate.py``-style): rebuild the exported slim network from
    ``exported_target.pth`` + ``.json`` with ``timm.create_model``, evaluate it on ``--dataset``'s evaluation split with
    the input size and normalisation recorded at export, print and return top-1 / loss / image count."""
    from timm.utils import init_distributed_device

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = init_distributed_device(args)
    model, meta = load_exported(args.validate_exported, device=device)
    args.input_size, args.mean, args.std = list(meta["input_size"]), meta.get("mean"), meta.get("std")
    args.num_classes = meta["num_classes"]
    data = build_data(args, rank=int(args.rank), world_size=int(args.world_size))
    result = evaluate(model, data.eval_loader, device, distributed=bool(args.distributed))
    result.update(model=meta["model"], weights=str(args.validate_exported))
    if int(args.rank) == 0:
        print(f"validate {args.validate_exported}: {meta['model']} {meta.get('model_kwargs', {})} on {args.dataset} "
              f"({result['count']} images): top1 {result['top1']:.4f} loss {result['loss']:.6f}", flush=True)
    cleanup(bool(args.distributed))
    return result


def _cost_summary(model: nn.Module, input_size: Sequence[int], log: Callable[[str], None]) -> dict[str, Any] | None:
    """Totals of :func:`shiftaddaug_plugin.cost.count_ops` for one image."""
    report = count_ops(model, tuple(input_size))
    totals = report.totals()
    totals["multiplicative_layers"] = report.multiplicative_layers
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``shiftaddaug-train``. Returns 0 on success; user errors exit with status 2 and the message,
    a non-finite loss with status 3."""
    try:
        args = parse_args(argv)
    except ValueError as err:
        print(f"shiftaddaug-train: error: {err}", file=sys.stderr)
        return 2
    try:
        validate_exported(args) if args.validate_exported else run(args)
    except NonFiniteLossError as err:
        print(f"shiftaddaug-train: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as err:
        print(f"shiftaddaug-train: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only output: atomic writes left the previous files as they were
        print(f"shiftaddaug-train: error: could not write into the output folder ({err}); free space or choose "
              "another --output. Earlier checkpoints are intact (files are replaced atomically)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
