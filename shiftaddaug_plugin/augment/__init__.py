"""The one ShiftAddAug training core that the timm trainer and the MMSegmentation hook/segmentor call.

* :mod:`.schedule` — :class:`AugSchedule`: width augmentation on/off, sort points and block-variant progress as
  functions of the step (epoch or iteration), computed once from fractions of training;
* :mod:`.sampler`  — :class:`WidthSampler`: the augmented widths of step ``i`` are a pure function of
  ``(seed, i)``, so every DDP rank and every resumed run samples the same sub-networks without saving state;
* :mod:`.step`     — :func:`joint_loss`: the target pass, then one sampled augmented pass (paper eq. 4 network),
  combined by the caller as ``L_t + alpha * L_a``;
* :mod:`.bn`       — :class:`RecalibratedBN`: NetAug's BN recalibration of the target network as a context that puts
  the training statistics back when it exits;
* :mod:`.guard`    — :class:`NonFiniteGuard`: a non-finite loss skips its step, too many stop training before the
  bad update (:class:`NonFiniteLossError`); :func:`nonfinite_entries` keeps overflowed weights out of checkpoints.
"""
from __future__ import annotations

from .bn import RecalibratedBN
from .guard import NonFiniteGuard, NonFiniteLossError, nonfinite_entries
from .sampler import WidthSampler
from .schedule import AugSchedule, StepPlan, fraction_to_step
from .step import joint_loss

__all__ = ["AugSchedule", "StepPlan", "fraction_to_step", "WidthSampler", "joint_loss", "RecalibratedBN",
           "NonFiniteGuard", "NonFiniteLossError", "nonfinite_entries"]
