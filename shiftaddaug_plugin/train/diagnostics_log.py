"""``--sort-diagnostics``: one JSON line per channel sort and per block-variant switch (docs/weight_sharing.md §3).

Both are side-effect free: the measurements run on copies of the model, and the global RNG state that iterating
the data loader draws from is restored, so a run with diagnostics follows the same trajectory as one without.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from shiftaddaug_plugin.block_variant import BlockVariantSchedule, switch_diagnostics
from shiftaddaug_plugin.convert.diagnostics import sort_diagnostics

__all__ = ["log_sort_diagnostics", "log_switch_diagnostics"]


def _fixed_batch(loader: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        images, targets = next(iter(loader))
    return images.to(device), targets.to(device)


def _summary(d: dict[str, Any]) -> str:
    return (f"loss {d.get('target_loss', float('nan')):.3f} mean|w| {d['mean_abs']:.3f} kurt {d['kurtosis']:.2f} "
            f"corr {d.get('channel_corr', float('nan')):.3f}")


def log_sort_diagnostics(model: nn.Module, loader: Any, device: torch.device, scope: str, epoch: int, path: Path,
                         log: Callable[[str], None]) -> None:
    """What the MF operators read before / after this sort, with and without the remap
    (:func:`shiftaddaug_plugin.convert.diagnostics.sort_diagnostics`) -> ``path`` (``sort_diagnostics.jsonl``)."""
    images, targets = _fixed_batch(loader, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        diag = sort_diagnostics(model, images, targets, scope=scope)
    with open(path, "a") as fh:
        fh.write(json.dumps({"epoch": epoch, "scope": scope, **diag}) + "\n")
    parts = [f"{key}: {_summary(diag[key])}" for key in ("before", "sorted_remap", "sorted_no_remap")]
    log(f"epoch {epoch}: sort diagnostics (target network, fixed batch) | " + " | ".join(parts))


def log_switch_diagnostics(schedule: BlockVariantSchedule, epoch: int, loader: Any, device: torch.device, path: Path,
                           log: Callable[[str], None]) -> None:
    """What the adder layers turning MF at ``epoch`` read, with and without the remap, against the layers already
    trained as adders (:func:`shiftaddaug_plugin.block_variant.switch_diagnostics`) -> ``path``
    (``switch_diagnostics.jsonl``). Nothing is written for an epoch without a switch."""
    if not list(schedule.switching_units(epoch)):
        return
    images, targets = _fixed_batch(loader, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        diag = switch_diagnostics(schedule, epoch, images, targets)
    if diag is None:
        return
    with open(path, "a") as fh:
        fh.write(json.dumps({"epoch": epoch, **diag}) + "\n")
    prior = diag["already_mf"]
    log(f"epoch {epoch}: switch diagnostics ({len(diag['switching'])} layers turn MF) | remap: "
        f"{_summary(diag['remap'])} | no_remap: {_summary(diag['no_remap'])} | adder-trained layers "
        f"({prior['layers']}): mean|w| {prior['mean_abs']:.3f} kurt {prior['kurtosis']:.2f}")
