"""The ShiftAddAug training step, epoch loop and evaluation (docs/algorithms.md §4; NetAug recipe adapted).

One step (:class:`ShiftAddAugTask`, a ``timm.task.ClassificationTask``) is the shared core's
:func:`shiftaddaug_plugin.augment.joint_loss`::

    set_mode(TARGET)                      -> logits_t, loss_t = L(W_t)              (headline: target loss / acc)
    WidthSampler.sample(step, width=.., expand=True); set_mode(AUGMENTED)
                                          -> loss_a = L(W_a)
    loss = loss_t + alpha * loss_a        -> one backward, one optimizer step

timm's ``TrainingTask`` contract (``forward(input, target) -> {'loss': ..., 'output': ...}``) fits the two-pass joint
loss as long as both passes live in ``forward`` and share one backward; we use it for the DDP wrapping
(``prepare_distributed``), the EMA copy (``setup_ema`` / ``update_ema``, timm ``ModelEmaV3``) and the criterion
(``create_classification_loss(smoothing=...)``). Both forward passes go through the same DDP wrapper before the
single backward: every parameter is used by both passes (hybrid layers slice one stored tensor), so each
parameter's gradient hook fires once per backward and DDP's reducer is satisfied. The price of one backward over
the summed loss is holding both graphs at once (2x activation memory of a *tiny* net).

The widths of step ``i`` (``task.step``, the optimizer update count) are a pure function of ``(seed, i)``
(:class:`shiftaddaug_plugin.augment.WidthSampler`), so all DDP ranks run the same augmented sub-network in every step
and a resumed run samples what the uninterrupted one would have.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.task import ClassificationTask
from torch import Tensor, nn

from shiftaddaug_plugin.augment import NonFiniteLossError, WidthSampler, joint_loss
from shiftaddaug_plugin.convert.plan import get_plan
from shiftaddaug_plugin.modes import Mode, set_mode
from shiftaddaug_plugin.protocol import unwrap

__all__ = ["NonFiniteLossError", "ShiftAddAugTask", "train_one_epoch", "evaluate", "unwrap", "format_eta"]


class ShiftAddAugTask(ClassificationTask):
    """Joint target + augmented loss of ShiftAddAug (docs/algorithms.md §4) as a timm training task.

    Args:
        model: a converted hybrid model (``shiftaddaug_plugin.convert.convert`` / ``timm.create_model(...,
            aug=True)``).
        alpha: weight of the augmented loss (``--aug-alpha``).
        augment: ``False`` = baseline, only the target pass (``--no-aug``).
        sampler: the width sampler (default ``WidthSampler(0)``); ``step`` (set by :func:`train_one_epoch` to the
            update count) selects the widths of each step.
        criterion_kwargs / criterion: as :class:`timm.task.ClassificationTask` (e.g. ``dict(smoothing=0.1)``).

    Attributes ``width_aug`` (width sampling on/off; expand sampling is always on while augmenting) and ``step``.
    """

    def __init__(self, model: nn.Module, *, alpha: float = 1.0, augment: bool = True,
                 sampler: WidthSampler | None = None, criterion: Any = None,
                 criterion_kwargs: dict[str, Any] | None = None, device: torch.device | None = None,
                 verbose: bool = False) -> None:
        super().__init__(model, criterion=criterion, criterion_kwargs=criterion_kwargs, device=device, verbose=verbose)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha={alpha!r} must be a finite number >= 0")
        self.alpha = float(alpha)
        self.augment = bool(augment)
        self.sampler = sampler if sampler is not None else WidthSampler(0)
        self.width_aug = True
        self.step = 0
        self.nonfinite_steps = 0  #: optimizer steps skipped for a non-finite loss so far
        if self.augment:

            get_plan(model)  # ValueError with the fix if the model is not converted

    @property
    def model(self) -> nn.Module:
        """The bare model (no DDP wrapper)."""
        return unwrap(self.trainable_module)

    def forward(self, input: Tensor, target: Tensor) -> dict[str, Tensor]:  # noqa: A002 - timm's signature
        outputs: list[Tensor] = []

        def target_loss() -> Tensor:
            outputs.append(self.trainable_module(input))
            return self.criterion(outputs[0], target)

        loss_t, loss_a = joint_loss(self.model, self.step, target_loss,
                                    lambda: self.criterion(self.trainable_module(input), target),
                                    sampler=self.sampler, augment=self.augment, width_aug=self.width_aug)
        result = {"output": outputs[0], "loss_target": loss_t}
        if loss_a is not None:
            result["loss_aug"] = loss_a
            result["loss"] = loss_t + self.alpha * loss_a
        else:
            result["loss_aug"] = torch.zeros((), device=loss_t.device, dtype=loss_t.dtype)
            result["loss"] = loss_t
        return result


def format_eta(seconds: float) -> str:
    """``h:mm:ss`` for progress lines."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _all_reduce_sum(values: Tensor, distributed: bool) -> Tensor:
    if distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def train_one_epoch(
    task: ShiftAddAugTask,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    device: torch.device,
    scheduler: Any = None,
    sched_on_updates: bool = False,
    num_updates: int = 0,
    amp_ctx: Callable[[], ContextManager[Any]] = nullcontext,
    scaler: Any = None,
    clip_grad: float | None = None,
    log_interval: int = 50,
    distributed: bool = False,
    world_size: int = 1,
    log: Callable[[str], None] = print,
    max_nonfinite: int = 0,
) -> tuple[dict[str, float], int]:
    """One epoch of joint-loss training. Returns ``(metrics, num_updates)``; metrics: ``loss_target``, ``loss_aug``,
    ``top1`` (target network on the training batches), ``images``, ``time``.

    A non-finite loss skips its optimizer step; after more than ``max_nonfinite`` such steps in the run
    (``task.nonfinite_steps``, all ranks together: the check uses the all-reduced losses) it raises
    :class:`NonFiniteLossError` before the step, so the model and the last checkpoint stay intact."""
    task.train()
    total = len(loader)  # type: ignore[arg-type]
    sums = torch.zeros(4, dtype=torch.float64)  # loss_t * n, loss_a * n, correct, n
    start = last = time.perf_counter()
    seen_since = 0
    for step, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        task.step = num_updates
        with amp_ctx():
            out = task(images, targets)
        n = images.shape[0]
        losses = torch.stack([out["loss_target"].detach().float(), out["loss_aug"].detach().float()])
        global_losses = _all_reduce_sum(losses.clone(), distributed) / world_size
        if not bool(torch.isfinite(global_losses).all()):
            task.nonfinite_steps += 1
            if task.nonfinite_steps <= max_nonfinite:
                log(f"  WARNING: non-finite loss at epoch {epoch} step {step} (target "
                    f"{global_losses[0].item():.4g}); step skipped ({task.nonfinite_steps}/{max_nonfinite} allowed "
                    "by --max-nonfinite-steps)")
                optimizer.zero_grad(set_to_none=True)
                continue
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {epoch} step {step}: target {global_losses[0].item():.4g}, "
                f"augmented {global_losses[1].item():.4g} (averaged over ranks), non-finite step "
                f"{task.nonfinite_steps} (--max-nonfinite-steps {max_nonfinite}). Training stopped before the "
                "optimizer step; the last checkpoint (last.pth.tar) is intact. Lower --lr, add --clip-grad, or check "
                "the data normalisation")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out["loss"]).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            out["loss"].backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), clip_grad)
            optimizer.step()
        num_updates += 1
        task.update_ema(step=num_updates)
        if scheduler is not None and sched_on_updates:
            scheduler.step_update(num_updates=num_updates)
        with torch.no_grad():
            correct = (out["output"].detach().argmax(dim=-1) == targets).sum().item()
        sums += torch.tensor([losses[0].item() * n, losses[1].item() * n, correct, n], dtype=torch.float64)
        seen_since += n
        if log_interval and ((step + 1) % log_interval == 0 or step + 1 == total):
            now = time.perf_counter()
            rate = seen_since * world_size / max(now - last, 1e-9)
            eta = (now - start) / (step + 1) * (total - step - 1)
            lr = optimizer.param_groups[0]["lr"]
            log(f"  epoch {epoch} [{step + 1:>5d}/{total}] loss_t {losses[0].item():.4f} loss_aug "
                f"{losses[1].item():.4f} lr {lr:.3e} {rate:.1f} img/s eta {format_eta(eta)}")
            last, seen_since = now, 0
    sums = _all_reduce_sum(sums, distributed)
    count = max(sums[3].item(), 1.0)
    metrics = {
        "loss_target": sums[0].item() / count,
        "loss_aug": sums[1].item() / count,
        "top1": 100.0 * sums[2].item() / count,
        "images": sums[3].item(),
        "time": time.perf_counter() - start,
    }
    return metrics, num_updates


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    distributed: bool = False,
    amp_ctx: Callable[[], ContextManager[Any]] = nullcontext,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy (no smoothing) of ``model`` in ``Mode.TARGET`` (hybrid layers) and
    eval mode; exact over the whole evaluation set with DDP (sums all-reduced; shards are not padded)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, n
    try:
        with set_mode(model, Mode.TARGET):
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                with amp_ctx():
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), targets, reduction="sum")
                correct = (logits.argmax(dim=-1) == targets).sum()
                sums += torch.tensor([loss.item(), correct.item(), images.shape[0]], dtype=torch.float64)
    finally:
        model.train(was_training)
    sums = _all_reduce_sum(sums, distributed)
    n = max(sums[2].item(), 1.0)
    return {"top1": 100.0 * sums[1].item() / n, "loss": sums[0].item() / n, "count": int(sums[2].item())}
