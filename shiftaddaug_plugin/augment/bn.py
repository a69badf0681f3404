"""NetAug's BN recalibration of the target network as a context (docs/algorithms.md §4).

The batch norms of a hybrid network are shared by the target and every augmented sub-network, so their running
statistics mix all of them. Before the target is evaluated or exported its statistics are re-estimated from training
images in target mode. :class:`RecalibratedBN` does that on entry and puts the training statistics back on exit, so
evaluation never changes the training trajectory: checkpoints hold the training statistics, and a resumed run
continues exactly like an uninterrupted one. Everything that must see the recalibrated statistics (evaluation,
export) runs inside the context.
"""
from __future__ import annotations

from types import TracebackType
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..modes import Mode, set_mode

__all__ = ["RecalibratedBN"]


def _batch_norms(models: tuple[nn.Module, ...]) -> list[_BatchNorm]:
    return [m for model in models for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class RecalibratedBN:
    """``with RecalibratedBN(recalibrate, model[, ema_model]):`` target mode, ``recalibrate(model)`` for each model
    on entry; every BN buffer of those models restored on exit (also after an exception).

    Args:
        recalibrate: re-estimates the statistics of one model (e.g. ``lambda m: recalibrate_bn(m, loader, n)``);
            called once per model, in target mode.
        models: the models (a hybrid model and its EMA copy, say). Models without tracking batch norms are
            left alone.
    """

    def __init__(self, recalibrate: Callable[[nn.Module], object], *models: nn.Module) -> None:
        self._recalibrate = recalibrate
        self._models = models
        self._saved: list[tuple[Tensor, Tensor]] | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def __enter__(self) -> "RecalibratedBN":
        if self._saved is not None:
            raise RuntimeError("RecalibratedBN is already active; exit it before entering again")
        self._saved = [(buf, buf.detach().clone()) for bn in _batch_norms(self._models)
                       for buf in bn.buffers(recurse=False)]
        try:
            for model in self._models:
                if _batch_norms((model,)):
                    set_mode(model, Mode.TARGET)
                    self._recalibrate(model)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        """Put the training statistics back (no-op when not active)."""
        if self._saved is None:
            return
        with torch.no_grad():
            for buf, saved in self._saved:
                buf.copy_(saved)
        self._saved = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()
