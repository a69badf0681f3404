"""Block-variant (progressive) training schedule (DESIGN §2.6).

Training starts with every switchable target layer multiplicative; layers become multiplication-free from shallow
to deep on a linear schedule over the epochs, reaching "all MF" at ``--block-variant-end`` (fraction of the epochs,
default 0.5) and staying there, so the network evaluated and exported at the end is fully MF. The switch only flips
``HybridConv2d.mf_enabled`` / ``HybridLinear.mf_enabled`` on pre-built layers: no parameter is created or dropped,
so the optimizer, the EMA copy and the DDP wrapper are unaffected (DESIGN §2.6, §3 mmseg rules).

``shiftaddaug_plugin.convert`` has no block-variant helper (the mmseg hook has its own, which imports mmengine), so
this minimal one lives here. "Shallow to deep" is module registration order, which for timm ``EfficientNet``-style
models is stem -> blocks -> head -> classifier.
"""
from __future__ import annotations

import math

from torch import nn

from shiftaddaug_plugin.modes import Mode

__all__ = ["switchable_layers", "set_mf_progress", "linear_progress", "apply_block_variant"]


def switchable_layers(model: nn.Module) -> list[nn.Module]:
    """Hybrid layers whose target part can be multiplicative or MF (have ``mf_enabled`` and ``op != 'mult'``),
    shallow to deep."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "mode", None), Mode) and hasattr(m, "mf_enabled")
            and getattr(m, "op", "mult") != "mult"]


def set_mf_progress(model: nn.Module, progress: float) -> int:
    """Make the first ``floor(progress * n)`` of the ``n`` switchable layers MF and the deeper ones
    multiplicative (``progress >= 1``: all MF). Returns the number of MF layers."""
    if not (isinstance(progress, (int, float)) and 0.0 <= float(progress) <= 1.0):
        raise ValueError(f"block-variant progress={progress!r} must lie in [0, 1]")
    layers = switchable_layers(model)
    count = len(layers) if progress >= 1.0 else int(math.floor(float(progress) * len(layers)))
    for i, layer in enumerate(layers):
        layer.mf_enabled = i < count
    return count


def linear_progress(epoch: int, epochs: int, end_fraction: float) -> float:
    """Fraction of MF layers during ``epoch`` (0-based): ``epoch / (end_fraction * epochs)`` capped at 1.

    Epoch 0 is all multiplicative (for ``end_fraction > 0``), epochs at or after ``end_fraction * epochs`` are
    all MF; ``end_fraction == 0`` means MF from the start."""
    end = end_fraction * epochs
    if end <= 0:
        return 1.0
    return min(1.0, epoch / end)


def apply_block_variant(model: nn.Module, schedule: str, epoch: int, epochs: int, end_fraction: float) -> int:
    """Set ``mf_enabled`` for ``epoch`` under ``schedule`` (``'none'``: all MF; ``'linear'``). Returns #MF layers."""
    if schedule == "none":
        return set_mf_progress(model, 1.0)
    if schedule == "linear":
        return set_mf_progress(model, linear_progress(epoch, epochs, end_fraction))
    raise ValueError(f"unknown block-variant schedule {schedule!r}; use 'none' or 'linear'")
