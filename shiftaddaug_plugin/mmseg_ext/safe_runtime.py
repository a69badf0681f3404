"""What keeps an mmengine/mmseg training run safe to kill, to run out of disk and to diverge (README "What happens
when things go wrong"; the same guarantees as the timm trainer, ``shiftaddaug_plugin.train``).

* :class:`AtomicLocalBackend` (file backend ``'shiftaddaug_atomic_local'``): local writes go to a temporary file
  in the target folder, are flushed to disk and renamed over the target (:func:`shiftaddaug_plugin.atomic.
  atomic_write`). ``ShiftAddAugHook`` points mmengine's ``CheckpointHook`` at it (:func:`use_atomic_checkpoints`),
  so a ``kill -9`` or a full disk never leaves a torn ``iter_N.pth`` and never damages the previous one.
* :class:`NonFiniteGuardOptimWrapper` (``optim_wrapper=dict(type='NonFiniteGuardOptimWrapper',
  max_nonfinite_steps=N)``): a NaN/inf loss skips its backward pass and optimizer step (all ranks agree: the
  finiteness flag is all-reduced); more than ``N`` such steps stop training with
  :class:`~shiftaddaug_plugin.augment.NonFiniteLossError` before the bad update. Checkpoints already written stay
  as they are; ``ShiftAddAugHook`` also refuses to checkpoint weights that overflowed while the loss was finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch
from mmengine.dist import all_reduce
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import MessageHub, print_log
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS

from shiftaddaug_plugin.atomic import atomic_write, atomic_write_text
from shiftaddaug_plugin.augment import NonFiniteGuard

__all__ = ["ATOMIC_BACKEND", "AtomicLocalBackend", "NonFiniteGuardOptimWrapper", "use_atomic_checkpoints"]

#: Name of the atomic local file backend (``backend_args=dict(backend=ATOMIC_BACKEND)``).
ATOMIC_BACKEND = "shiftaddaug_atomic_local"


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text`` (temporary file + fsync + rename)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:  # noqa: D102
        def write(handle: IO[Any]) -> None:
            handle.write(obj)

        atomic_write(filepath, write)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:  # noqa: D102
        if encoding.replace("-", "").lower() != "utf8":
            raise ValueError(f"AtomicLocalBackend writes UTF-8 text only, got encoding={encoding!r}")
        atomic_write_text(obj, filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def use_atomic_checkpoints(hooks: list[Any]) -> list[Any]:
    """Point every ``CheckpointHook`` that writes to the local disk with mmengine's default backend at
    :class:`AtomicLocalBackend`; returns the hooks changed. Hooks with their own ``backend_args`` (S3, petrel ...)
    or a remote ``out_dir`` are left alone."""
    from mmengine.hooks import CheckpointHook

    changed = []
    for hook in hooks:
        if not isinstance(hook, CheckpointHook) or hook.backend_args is not None:
            continue
        out_dir = getattr(hook, "out_dir", None)
        if isinstance(out_dir, str) and "://" in out_dir:
            continue
        hook.backend_args = {"backend": ATOMIC_BACKEND}
        changed.append(hook)
    return changed


def _current_iter() -> int | None:
    try:
        value = MessageHub.get_current_instance().get_info("iter")
    except Exception:  # noqa: BLE001 - no runner: the message names no iteration
        return None
    return None if value is None else int(value)


@OPTIM_WRAPPERS.register_module()
class NonFiniteGuardOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that skips the update of a non-finite loss and stops after ``max_nonfinite_steps`` skips.

    Args:
        max_nonfinite_steps: NaN/inf losses tolerated (their steps skipped) before training stops; 0 stops at the
            first. The count covers one process's run (it restarts at 0 on ``--resume``).
        *args, **kwargs: as ``mmengine.optim.OptimWrapper`` (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self, *args: Any, max_nonfinite_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = NonFiniteGuard(max_nonfinite_steps)

    def update_params(self, loss: torch.Tensor, step_kwargs: dict | None = None,  # type: ignore[override]
                      zero_kwargs: dict | None = None) -> None:
        """Backward + step as ``OptimWrapper``, unless the loss (on any rank) is NaN or infinite."""
        finite = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
        all_reduce(finite, op="min")  # every rank skips (or stops) together
        it = _current_iter()
        where = f"iteration {it + 1}" if it is not None else "this iteration"
        value = float(loss.detach().float().reshape(-1)[0]) if loss.numel() else float("nan")
        stop = (f"non-finite training loss at {where} ({value:.4g}), non-finite step {self.guard.count + 1} "
                f"(optim_wrapper.max_nonfinite_steps={self.guard.max_nonfinite}). Training stopped before the "
                "optimizer step: the checkpoints written so far are intact (resume from the last one with "
                "--resume). Lower optim_wrapper.optimizer.lr, set optim_wrapper.clip_grad=dict(max_norm=...), or "
                "check the data normalisation")
        if self.guard.check(bool(finite.item() > 0), stop):
            super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)
            return
        print_log(f"NonFiniteGuardOptimWrapper: non-finite loss at {where} ({value:.4g}); step skipped "
                  f"({self.guard.count}/{self.guard.max_nonfinite} allowed by optim_wrapper.max_nonfinite_steps)",
                  logger="current", level=30)
        self.zero_grad(**(zero_kwargs or {}))



def rng_snapshot() -> tuple[Any, ...]:
    """The states of python's, numpy's and torch's global generators (CUDA too, once initialised)."""
    import random

    import numpy as np

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def rng_restore(states: tuple[Any, ...]) -> None:
    """Put back what :func:`rng_snapshot` returned."""
    import random

    import numpy as np

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    if states[3] is not None:
        torch.cuda.set_rng_state_all(states[3])


def torch_rng_state() -> dict[str, Any]:
    """torch's global generator states as tensors (what a checkpoint loaded with ``weights_only=True`` holds).

    Only torch's: python's and numpy's generators feed the data pipeline, and mmengine's ``--resume`` replays
    the pipeline by advancing the data loader over the finished iterations, which brings them to the same state.
    """
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_torch_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`torch_rng_state` (CUDA states only when this process uses the same number of devices)."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
