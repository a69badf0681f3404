"""``ShiftAddAugHook``: the ShiftAddAug training schedule as an mmengine hook (docs/algorithms.md §4-§6,
docs/ARCHITECTURE.md).

mmseg schedules are iteration-based (epoch hooks fire once), so every interval here counts iterations:

* **width augmentation** is on for the first ``width_aug_end`` fraction of ``max_iters`` (NetAug: the first half);
  expand augmentation continues to the end (the segmentor samples it every step).
* **channel sorting** (:func:`shiftaddaug_plugin.convert.sort_channels`) every ``sort_interval`` iterations while
  width augmentation is on, with the optimizer state (and an ``EMAHook``'s averaged copy) permuted in place.
* **block-variant training** (§6, optional): target layers start multiplicative and become multiplication-free
  from shallow to deep until ``block_variant_end`` (:class:`shiftaddaug_plugin.block_variant.BlockVariantSchedule`
  with ``unit='iter'``).
* **target mode + BN recalibration** (over ``recalib_images`` training images) before validation and test; the
  training BN statistics are restored afterwards, so evaluation never alters the training trajectory.
* **export**: after every checkpoint the hook writes the slim MF target next to it (``iter_N_mf_target.pth``).
* its own state and torch's RNG state go into checkpoints and come back on ``--resume``; validation leaves every
  RNG as it found it, so a resumed run continues exactly as the uninterrupted one.
* **safety** (:mod:`.safe_runtime`): checkpoints are written atomically (``atomic_checkpoints``), and weights that
  became NaN/inf are never checkpointed.

All schedule decisions are functions of the iteration, so a resumed run makes the same ones; recalibration uses
a seeded loader and restores every RNG it touches, so it never perturbs training randomness.
"""
from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import nn

from shiftaddaug_plugin.augment import AugSchedule, NonFiniteLossError, RecalibratedBN, nonfinite_entries
from shiftaddaug_plugin.block_variant import BlockVariantSchedule
from shiftaddaug_plugin.convert import recalibrate_bn, sort_channels
from shiftaddaug_plugin.convert.plan import PLAN_ATTR
from shiftaddaug_plugin.convert.sort import SortScope
from shiftaddaug_plugin.modes import Mode, set_mode
from shiftaddaug_plugin.protocol import hybrid_modules, unwrap

from .checkpoint_compat import from_plain, to_plain
from .export import export_checkpoint_path, save_exported
from .safe_runtime import rng_restore, rng_snapshot, set_torch_rng_state, torch_rng_state, use_atomic_checkpoints

__all__ = ["ShiftAddAugHook", "build_recalib_loader", "hybrid_layers", "recalibrate_segmentor"]

_STATE_KEY = "shiftaddaug_hook"


def hybrid_layers(model: nn.Module) -> list[nn.Module]:
    """Every hybrid layer (anything with a :class:`Mode` ``mode`` attribute) of ``model``, in module order."""
    return [m for _, m in hybrid_modules(model)]


def _check_fraction(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        extra = " or None (off)" if allow_none else ""
        raise ValueError(f"ShiftAddAugHook: {name}={value!r} must be a fraction of max_iters in [0, 1]{extra}")
    return float(value)


def _check_count(name: str, value: Any, *, allow_none: bool = False, minimum: int = 1) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None (off)" if allow_none else ""
        raise ValueError(f"ShiftAddAugHook: {name}={value!r} must be an int >= {minimum}{extra}")
    return int(value)


@contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch RNGs inside the block and restore their states afterwards."""
    states = rng_snapshot()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        rng_restore(states)


def build_recalib_loader(train_dataloader_cfg: Any, seed: int, batch_size: int | None = None) -> Any:
    """A deterministic loader over the training set for BN recalibration: the train pipeline, a sampler
    shuffled with ``seed``, no worker processes (the transforms then draw from the RNGs seeded by
    :func:`recalibrate_segmentor`)."""
    from mmengine.runner import Runner

    cfg = copy.deepcopy(train_dataloader_cfg)
    cfg.update(num_workers=0, persistent_workers=False,
               sampler=dict(type="DefaultSampler", shuffle=True, seed=seed))
    cfg.pop("batch_sampler", None)
    if batch_size is not None:
        cfg["batch_size"] = batch_size
    return Runner.build_dataloader(cfg, seed=seed)


def recalibrate_segmentor(model: nn.Module, loader: Any, num_images: int, seed: int) -> None:
    """NetAug BN recalibration of a segmentor's target network (docs/algorithms.md §4): target mode, then the BN running
    statistics become the batch statistics of ``num_images`` images of ``loader`` (mmengine data batches, run
    through ``model.data_preprocessor``). Python/numpy/torch RNGs are seeded with ``seed`` inside and restored
    afterwards, so the result is reproducible and training randomness is untouched. Under DDP the statistics are
    averaged over ranks."""

    preprocess = model.data_preprocessor

    def batches() -> Iterator[torch.Tensor]:
        for data in loader:
            yield preprocess(data, training=True)["inputs"]

    with _isolated_rng(seed):
        set_mode(model, Mode.TARGET)
        recalibrate_bn(model, batches(), num_images)
    _sync_bn_stats(model)


def _sync_bn_stats(model: nn.Module) -> None:
    from mmengine.dist import all_reduce_params, get_world_size

    if get_world_size() > 1:
        stats = [buf for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for buf in (m.running_mean, m.running_var) if buf is not None]
        all_reduce_params(stats, op="mean")


@HOOKS.register_module()
class ShiftAddAugHook(Hook):
    """ShiftAddAug schedule for a :class:`~.segmentor.ShiftAddAugEncoderDecoder` trained by mmengine's Runner.

    Args:
        width_aug_end: fraction of ``max_iters`` after which width augmentation stops (NetAug: 0.5). ``0`` never
            widens block outputs (only expand augmentation), ``1`` widens to the end.
        sort_interval: sort channels by importance every this many iterations while width augmentation is on;
            ``None`` never sorts.
        sort_scope: ``'all'`` (default: the most important mid channels move into the target, paper/NetAug) or
            ``'augmented'`` (target channels stay; only augmented ones are sorted), see ``convert.sort``.
        sort_remap: quantile-match weights that cross an adder layer's target boundary at a sort (eq. 5).
        block_variant_remap: quantile-match an adder layer's target weights onto the adder prior when block-variant
            training turns it MF (eq. 5; ``False``: the ablation).
        block_variant_end: fraction of ``max_iters`` at which every target layer is multiplication-free; before it,
            layers switch from multiplicative to MF shallow to deep. ``None`` (default): MF from the start.
        recalib_images: number of training images whose batch statistics become the BN running statistics before
            every validation, test and export (NetAug's recalibration; ShiftAddAug §3).
        recalib_batch_size: batch size of the recalibration loader (default: the train loader's).
        recalib_seed: seed of the recalibration loader and of the transforms it runs: recalibration is
            deterministic, so the exported model reproduces the validated one exactly.
        recalib_before_test: also recalibrate before ``runner.test()`` (needs ``train_dataloader`` in the config).
        export: write the exported MF target next to every checkpoint.
        export_suffix: ``iter_1000.pth`` -> ``iter_1000{export_suffix}``.
        atomic_checkpoints: point mmengine's ``CheckpointHook`` at the atomic local file backend
            (:mod:`.safe_runtime`): a killed run or a full disk never leaves a torn checkpoint.
    """

    priority = "LOWEST"  # after CheckpointHook (VERY_LOW): the export follows the checkpoint it belongs to

    def __init__(
        self,
        width_aug_end: float = 0.5,
        sort_interval: int | None = 1000,
        sort_scope: str = "all",
        sort_remap: bool = True,
        block_variant_remap: bool = True,
        block_variant_end: float | None = None,
        recalib_images: int = 2000,
        recalib_batch_size: int | None = None,
        recalib_seed: int = 0,
        recalib_before_test: bool = True,
        export: bool = True,
        export_suffix: str = "_mf_target.pth",
        atomic_checkpoints: bool = True,
    ) -> None:
        self.width_aug_end = _check_fraction("width_aug_end", width_aug_end)
        self.sort_interval = _check_count("sort_interval", sort_interval, allow_none=True)

        try:
            self.sort_scope = SortScope.parse(sort_scope).value
        except ValueError as err:
            raise ValueError(f"ShiftAddAugHook: {err}") from None
        if not isinstance(sort_remap, bool):
            raise TypeError(f"ShiftAddAugHook: sort_remap={sort_remap!r} must be a bool")
        self.sort_remap = sort_remap
        if not isinstance(block_variant_remap, bool):
            raise TypeError(f"ShiftAddAugHook: block_variant_remap={block_variant_remap!r} must be a bool")
        self.block_variant_remap = block_variant_remap
        self.block_variant_end = _check_fraction("block_variant_end", block_variant_end, allow_none=True)
        if self.block_variant_end == 0.0:
            raise ValueError("ShiftAddAugHook: block_variant_end=0 means MF from the start; use None for that")
        self.recalib_images = _check_count("recalib_images", recalib_images)
        self.recalib_batch_size = _check_count("recalib_batch_size", recalib_batch_size, allow_none=True)
        self.recalib_seed = _check_count("recalib_seed", recalib_seed, minimum=0)
        for name, flag in (("recalib_before_test", recalib_before_test), ("export", export),
                           ("atomic_checkpoints", atomic_checkpoints)):
            if not isinstance(flag, bool):
                raise TypeError(f"ShiftAddAugHook: {name}={flag!r} must be a bool")
        self.recalib_before_test = recalib_before_test
        self.export = export
        self.atomic_checkpoints = atomic_checkpoints
        if not isinstance(export_suffix, str) or not export_suffix.endswith(".pth") or "/" in export_suffix:
            raise ValueError(f"ShiftAddAugHook: export_suffix={export_suffix!r} must be a file-name suffix ending in "
                             "'.pth', e.g. '_mf_target.pth'")
        self.export_suffix = export_suffix
        self.num_sorts = 0
        self.last_sort_iter = -1
        self.last_exported_ckpt: str | None = None
        self.exported_paths: list[str] = []
        self._recalib_loader: Any = None
        self._recalibrated: RecalibratedBN | None = None
        self._warned_no_hybrid = False
        self._variant: BlockVariantSchedule | None = None
        self._rng_before_val: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner: Any) -> nn.Module:
        return unwrap(runner.model)

    def _is_hybrid(self, runner: Any) -> bool:
        model = self._model(runner)
        if hybrid_layers(model):
            return True
        if not self._warned_no_hybrid:
            runner.logger.info("ShiftAddAugHook: the model has no hybrid layers (deploy/exported model); "
                               "nothing to schedule, recalibrate or export")
            self._warned_no_hybrid = True
        return False

    def schedule(self, runner: Any) -> AugSchedule:
        """The shared schedule (:class:`shiftaddaug_plugin.augment.AugSchedule`) over ``max_iters`` iterations; no
        augmentation (hence no width augmentation and no sorting) when the segmentor's ``alpha`` is 0."""
        return AugSchedule(total=max(1, int(runner.max_iters)),
                           augment=float(getattr(self._model(runner), "alpha", 1.0)) > 0,
                           width_aug_stop=self.width_aug_end, sort_interval=self.sort_interval,
                           block_variant_end=self.block_variant_end)

    def settings(self) -> dict[str, Any]:
        """The schedule settings (stored in checkpoints to detect a changed schedule on resume)."""
        return dict(width_aug_end=self.width_aug_end, sort_interval=self.sort_interval, sort_scope=self.sort_scope,
                    sort_remap=self.sort_remap, block_variant_remap=self.block_variant_remap,
                    block_variant_end=self.block_variant_end, recalib_images=self.recalib_images,
                    recalib_seed=self.recalib_seed)

    # ------------------------------------------------------------------------------------------ training
    def before_train(self, runner: Any) -> None:
        """Check the model, and apply the schedule state of the (possibly resumed) start iteration."""
        model = self._model(runner)
        if not self._is_hybrid(runner):
            raise ValueError(
                f"ShiftAddAugHook needs a hybrid model (type='ShiftAddAugEncoderDecoder' without deploy=True); the "
                f"runner's model is {type(model).__name__} with no hybrid layers: remove the hook or fix model.type")
        if not hasattr(model, "aug_step") or not hasattr(model, "width_aug_enabled"):
            raise ValueError(f"ShiftAddAugHook drives ShiftAddAugEncoderDecoder; {type(model).__name__} lacks "
                             "aug_step/width_aug_enabled: use model.type='ShiftAddAugEncoderDecoder'")
        if self.atomic_checkpoints:
            use_atomic_checkpoints(runner.hooks)
        self._apply_schedule(runner, runner.iter)

    def _apply_schedule(self, runner: Any, it: int) -> None:
        model = self._model(runner)
        model.aug_step = it
        model.width_aug_enabled = self.schedule(runner).width_aug(it)
        if self.block_variant_end is not None:
            wrapper = getattr(runner, "optim_wrapper", None)
            self._variant_schedule(runner, model).apply(it, optimizer=getattr(wrapper, "optimizer", None))

    def _variant_schedule(self, runner: Any, model: nn.Module) -> BlockVariantSchedule:
        """The block-variant schedule (docs/algorithms.md §6) of ``model``: target layers MF shallow -> deep over
        iterations ``[0, max(1, round(block_variant_end * max_iters))]``; rebuilt when the model or ``max_iters``
        changes."""
        end = self.schedule(runner).block_variant_end_step
        schedule = self._variant
        if schedule is None or schedule.model is not model or schedule.end != end:
            try:
                plan = getattr(model, PLAN_ATTR, None)
                prior = (plan.config.adder_init_std if plan is not None else None) or 1.0
                schedule = BlockVariantSchedule(model, start=0, end=end, unit="iter", remap=self.block_variant_remap,
                                                adder_prior_std=prior)
            except ValueError as err:
                raise ValueError(f"ShiftAddAugHook(block_variant_end={self.block_variant_end}): {err}; or set "
                                 "block_variant_end=None") from err
            self._variant = schedule
        return schedule

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Set step / width switch / block-variant progress; sort channels on schedule."""
        it = runner.iter
        self._apply_schedule(runner, it)
        model = self._model(runner)
        if self.schedule(runner).sort(it) and it != self.last_sort_iter:

            stats: dict[str, int] = {}
            sort_channels(model, optimizer=runner.optim_wrapper.optimizer, ema=self._ema_model(runner),
                          scope=self.sort_scope, remap_moved=self.sort_remap, stats=stats)
            self.num_sorts += 1
            self.last_sort_iter = it
            runner.logger.info(f"ShiftAddAugHook: sorted channels at iter {it} (sort #{self.num_sorts}, scope "
                               f"{self.sort_scope}): {stats['channels_moved']} channels moved into the target, "
                               f"{stats['entries_remapped']} weights remapped")

    @staticmethod
    def _ema_model(runner: Any) -> nn.Module | None:
        for hook in runner.hooks:
            ema = getattr(hook, "ema_model", None)
            if ema is not None:
                return getattr(ema, "module", ema)
        return None

    # ------------------------------------------------------------------------------------ recalibration
    def recalibrate(self, runner: Any) -> None:
        """Target mode, then BN running statistics re-estimated over ``recalib_images`` training images
        (deterministic; averaged over DDP ranks). The training statistics are stashed first and come back with
        :meth:`restore_bn_stats`, so evaluation never changes the training trajectory (a resumed run, whose
        checkpoint holds training statistics, continues exactly like the uninterrupted one)."""
        if self._recalib_loader is None:
            cfg = runner.cfg.get("train_dataloader")
            if cfg is None:
                raise ValueError("ShiftAddAugHook recalibrates BN on training images but the config has no "
                                 "train_dataloader; add one or set recalib_before_test=False")
            self._recalib_loader = build_recalib_loader(cfg, self.recalib_seed, self.recalib_batch_size)
        if self._recalibrated is not None:  # already recalibrated (nested call): keep the stashed training stats
            return
        loader, images, seed = self._recalib_loader, self.recalib_images, self.recalib_seed
        self._recalibrated = RecalibratedBN(lambda m: recalibrate_segmentor(m, loader, images, seed),
                                            self._model(runner))
        self._recalibrated.__enter__()

    def restore_bn_stats(self) -> None:
        """Put back the BN statistics stashed by :meth:`recalibrate` (no-op if none are stashed)."""
        if self._recalibrated is not None:
            self._recalibrated.restore()
            self._recalibrated = None

    def before_val(self, runner: Any) -> None:
        """Evaluate the target network with recalibrated BN statistics; remember the RNG states."""
        self._rng_before_val = rng_snapshot()
        if self._is_hybrid(runner):
            self.recalibrate(runner)

    def after_val(self, runner: Any) -> None:
        """Training continues with its own BN statistics and RNG states, as if there had been no validation
        (so a run resumed from the checkpoint written just before a validation continues identically)."""
        self.restore_bn_stats()
        if self._rng_before_val is not None:
            rng_restore(self._rng_before_val)
            self._rng_before_val = None

    def before_test(self, runner: Any) -> None:
        """As :meth:`before_val` (recalibration only with ``recalib_before_test``)."""
        if self._is_hybrid(runner):
            set_mode(self._model(runner), Mode.TARGET)
            if self.recalib_before_test:
                self.recalibrate(runner)

    # ---------------------------------------------------------------------------------------------- export
    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Export the MF target next to a checkpoint the ``CheckpointHook`` has just written; every RNG is left as
        it was (a run resumed from that checkpoint, which does not export again, continues identically)."""
        if not self.export:
            return
        ckpt = runner.message_hub.get_info("last_ckpt")
        if ckpt is None or ckpt == self.last_exported_ckpt:
            return

        states = rng_snapshot()  # building the exported layers draws initial weights: keep training's RNGs
        self.recalibrate(runner)  # all ranks (collective); only the main process writes
        path = export_checkpoint_path(ckpt, self.export_suffix)
        try:
            save_exported(self._model(runner), path, source_checkpoint=ckpt, iteration=runner.iter + 1,
                          dataset_meta=getattr(runner.train_dataloader.dataset, "metainfo", None))
        finally:
            self.restore_bn_stats()
            rng_restore(states)
        self.last_exported_ckpt = ckpt
        self.exported_paths.append(path)
        runner.logger.info(f"ShiftAddAugHook: exported the MF target to {path}")

    # ------------------------------------------------------------------------------------------ checkpoint
    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Refuse non-finite weights (the previous checkpoint stays the last); store the hook state and torch's RNG
        state; rewrite mmengine's message-hub state into plain types, so the whole checkpoint
        loads with ``torch.load(weights_only=True)`` (torch >= 2.6 default, used by ``--resume``)."""

        bad = nonfinite_entries(checkpoint.get("state_dict", {}))
        if bad:  # the loss stayed finite but the weights overflowed: never write them
            raise NonFiniteLossError(
                f"non-finite weights at iteration {runner.iter + 1} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}); not saved: the checkpoints written so far are intact. Lower "
                "optim_wrapper.optimizer.lr or set optim_wrapper.clip_grad=dict(max_norm=...)")
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = to_plain(checkpoint["message_hub"])
        checkpoint[_STATE_KEY] = dict(num_sorts=self.num_sorts, last_sort_iter=self.last_sort_iter,
                                      last_exported_ckpt=self.last_exported_ckpt,
                                      exported_paths=list(self.exported_paths), settings=self.settings(),
                                      torch_rng=torch_rng_state())

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Restore the hook state, mmengine's message-hub objects and (on ``--resume``) torch's RNG state; warn
        when the schedule settings changed."""

        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
        state = checkpoint.get(_STATE_KEY)
        if state is None:
            return
        self.num_sorts = int(state["num_sorts"])
        self.last_sort_iter = int(state["last_sort_iter"])
        self.last_exported_ckpt = state.get("last_exported_ckpt")
        self.exported_paths = list(state.get("exported_paths", []))
        if getattr(runner, "_resume", False) and "torch_rng" in state:
            set_torch_rng_state(state["torch_rng"])  # dropout etc. continue as in the uninterrupted run
        if state.get("settings") != self.settings():
            runner.logger.warning(f"ShiftAddAugHook: schedule settings changed since the checkpoint "
                                  f"({state.get('settings')} -> {self.settings()}); continuing with the new ones")
