"""Block-variant (progressive) training schedule (docs/algorithms.md §6, ShiftAddAug §3.3).

Training starts with every switchable target layer **multiplicative**; target layers then become
**multiplication-free (MF)** one after the other, from shallow to deep, and from ``end`` on the whole target is MF
(the network that is evaluated and exported). The switch only flips the ``mf_enabled`` flag of pre-built
:class:`~shiftaddaug_plugin.layers.HybridConv2d` / :class:`~shiftaddaug_plugin.layers.HybridLinear` layers: all
parameters exist from the start, so the optimizer, the EMA copy and the DDP wrapper built before training are
unaffected (docs/ARCHITECTURE.md: mmengine builds them before hooks run).

API for the training entry points (timm ``train/`` per epoch or per iteration, mmseg hook per iteration)::

    from shiftaddaug_plugin.block_variant import BlockVariantSchedule

    schedule = BlockVariantSchedule(model, start=0, end=int(0.5 * epochs), unit="epoch")   # after convert()
    for epoch in range(start_epoch, epochs):      # also right after resuming: the state is a function of the step
        schedule.apply(epoch)                     # -> number of MF units; model_ema: schedule.apply(epoch, ema.module)
        ...

    schedule = BlockVariantSchedule(model, start=0, end=8000, unit="iter")   # mmseg: call in before_train_iter
    schedule.apply(runner.iter)

Rule (:func:`mf_count`): with ``n`` ordered units (layers, or blocks with ``granularity='block'``) the first
``floor(n * (step - start) / (end - start))`` units are MF, clamped to ``[0, n]``: before ``start`` none, at and
after ``end`` all. ``start == end`` switches everything at ``start``. Unit ``k`` (0-based) therefore turns MF at
``step >= start + (k + 1) / n * (end - start)``: evenly spaced, the deepest one exactly at ``end``. The pure core is
:func:`mf_layers_at` (``progress`` in [0, 1] -> the MF prefix of ``ordered_layers``).

Order ("shallow to deep") is module registration order (``model.modules()``), which for timm ``EfficientNet``
models is stem -> blocks (stage by stage) -> head -> classifier, and for mmseg segmentors backbone -> neck -> heads.
Switchable layers are modules with an ``mf_enabled`` attribute whose ``op`` is not ``'mult'`` (layers kept
multiplicative by the conversion config, e.g. the stem conv, never switch). ``granularity='block'`` groups the
layers of one block (their common parent module, e.g. timm's ``blocks.2.1``) so a block switches at once; layers
directly under the root (stem, classifier) form their own unit.

Heterogeneous weight sharing at the switch (ShiftAddAug eq. 5; docs/weight_sharing.md): before its switch an adder
layer's target block ``W[:O_t, :I_t]`` is read by multiplication and trained as such (Gaussian, multiplicative
scale). When the layer turns MF the adder reads that block, so with ``remap=True`` (default) the block is
quantile-matched once, at the switch step, onto the adder's prior ``Laplace(0, b)``, ``b = adder_prior_std /
sqrt(2)`` (the variance of AdderNet's ``N(0, adder_prior_std^2)`` initialisation): ``w <- F_Laplace^-1(Phi((w -
mu) / sigma))`` with ``(mu, sigma)`` the Gaussian fit of the block. The map is monotone (every weight keeps its rank);
first / second optimizer moments of the block are rescaled by ``b / sigma`` and its square. Which layers switch at
``step`` is a function of the step alone (MF at ``step``, not at ``step - 1``), so a resumed run remaps exactly
what the uninterrupted run did; a second ``apply`` of the same step does not remap again. Shift layers need no
remap (power-of-two rounding reads multiplicative weights at their own scale); the shift-add's adder weight is only
trained once MF, so it needs none either.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence, TypeVar

import torch
from torch import nn

from .convert.sort import SECOND_MOMENTS
from .functional.distribution import gauss_scale, gauss_to_laplace_matched
from .ops import Op
from .protocol import is_switchable, unwrap

__all__ = [
    "remap_switched_adder",
    "UNITS",
    "GRANULARITIES",
    "switchable_layers",
    "variant_units",
    "schedule_progress",
    "mf_count",
    "mf_layers_at",
    "BlockVariantSchedule",
    "set_all_mf",
]

#: schedule step units: 'epoch' (timm entry point) or 'iter' (iteration-based mmseg schedules)
UNITS: tuple[str, ...] = ("epoch", "iter")
#: what switches at once: one hybrid layer, or all hybrid layers of a block (common parent module)
GRANULARITIES: tuple[str, ...] = ("layer", "block")

T = TypeVar("T")


def switchable_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """``(name, layer)`` of every layer whose target part can be multiplicative or MF, shallow to deep.

    Switchable: :func:`shiftaddaug_plugin.protocol.is_switchable` (``HybridConv2d`` / ``HybridLinear`` with a
    multiplication-free ``op``)."""
    return [(name, m) for name, m in model.named_modules() if is_switchable(m)]


def variant_units(model: nn.Module, granularity: str = "layer") -> list[list[tuple[str, Any]]]:
    """Switchable layers grouped into the units that turn MF together, shallow to deep (module docstring)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r} is unknown; use one of {', '.join(map(repr, GRANULARITIES))}")
    layers = switchable_layers(model)
    if granularity == "layer":
        return [[item] for item in layers]
    units: list[list[tuple[str, Any]]] = []
    index: dict[str, int] = {}
    for name, layer in layers:
        parent = name.rpartition(".")[0]
        key = parent if parent else name  # layers directly under the root are units of their own
        if key not in index:
            index[key] = len(units)
            units.append([])
        units[index[key]].append((name, layer))
    return units


def _check_number(name: str, value: object, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TypeError(f"block-variant {name}={value!r} must be a finite number of {unit}s")
    if unit == "iter" and not float(value).is_integer():
        raise ValueError(f"block-variant {name}={value!r} must be a whole number of iterations with unit='iter'")
    if value < 0:
        raise ValueError(f"block-variant {name}={value!r} must be >= 0")
    return float(value)


def schedule_progress(step: float, start: float, end: float) -> float:
    """Fraction of units that are MF at ``step``: ``(step - start) / (end - start)`` clamped to [0, 1];
    ``start == end`` -> 0 before ``start``, 1 from ``start`` on."""
    if end < start:
        raise ValueError(f"block-variant end={end!r} must be >= start={start!r}")
    if step >= end:
        return 1.0
    if step <= start:
        return 0.0
    return (step - start) / (end - start)


def mf_count(progress: float, n: int) -> int:
    """Number of MF units out of ``n`` at ``progress`` in [0, 1]: ``floor(progress * n)`` (``n`` at 1)."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= float(progress) <= 1.0:
        raise ValueError(f"block-variant progress={progress!r} must be a number in [0, 1]")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number of units n={n!r} must be an int >= 0")
    if progress >= 1.0:
        return n
    return min(n, int(math.floor(float(progress) * n + 1e-9)))


def mf_layers_at(progress: float, ordered_layers: Sequence[T]) -> list[T]:
    """The MF prefix of ``ordered_layers`` (shallow -> deep) at ``progress`` in [0, 1] (pure; docs/algorithms.md §6)."""
    return list(ordered_layers[: mf_count(progress, len(ordered_layers))])


def set_all_mf(model: nn.Module, enabled: bool = True) -> int:
    """Set ``mf_enabled`` on every switchable layer (``True``: the final, fully MF target). Returns their number."""
    layers = switchable_layers(model)
    for _, layer in layers:
        layer.mf_enabled = bool(enabled)
    return len(layers)


class BlockVariantSchedule:
    """Turn target layers MF from shallow to deep between ``start`` and ``end`` (docs/algorithms.md §6; module
    docstring).

    Args:
        model: the converted hybrid model (or its DDP wrapper; ``.module`` is used). Needs >= 1 switchable layer.
        start: step (epoch or iteration) at which the first unit turns MF; before it all are multiplicative.
        end: step from which every unit is MF (``end >= start``).
        unit: ``'epoch'`` or ``'iter'`` (iterations must be whole numbers; epochs may be fractional).
        granularity: ``'layer'`` (one hybrid layer at a time) or ``'block'`` (all layers of a block together).

        remap: quantile-match an adder layer's target block onto the adder prior when it switches (module
            docstring); ``False`` keeps the multiplicatively trained weights as they are (the ablation).
        adder_prior_std: standard deviation of the AdderNet prior ``N(0, s^2)`` (the converter's
            ``ConvertConfig.adder_init_std``), giving ``b = s / sqrt(2)``.

    The schedule holds no state besides its arguments (and which step it last remapped, so a repeated ``apply`` of
    one step is harmless): ``apply(step)`` after resuming reproduces the state of an uninterrupted run.
    """

    def __init__(self, model: nn.Module, start: float, end: float, unit: str = "epoch",
                 granularity: str = "layer", *, remap: bool = True, adder_prior_std: float = 1.0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"BlockVariantSchedule needs the converted nn.Module, got {type(model).__name__}")
        if unit not in UNITS:
            raise ValueError(f"unit={unit!r} is unknown; use 'epoch' (per-epoch calls) or 'iter' (per-iteration calls)")
        self.unit = unit
        self.start = _check_number("start", start, unit)
        self.end = _check_number("end", end, unit)
        if self.end < self.start:
            raise ValueError(f"block-variant end={end!r} must be >= start={start!r} (end: step at which the whole "
                             "target is multiplication-free)")
        self.granularity = granularity
        if not isinstance(remap, bool):
            raise TypeError(f"block-variant remap={remap!r} must be a bool")
        if not (isinstance(adder_prior_std, (int, float)) and math.isfinite(adder_prior_std) and adder_prior_std > 0):
            raise ValueError(f"adder_prior_std={adder_prior_std!r} must be a positive number (AdderNet: 1.0)")
        self.remap = remap
        self.adder_prior_b = float(adder_prior_std) / math.sqrt(2.0)
        self._remapped_at: dict[int, float] = {}  # id(model) -> last step whose switching layers were remapped
        self.model = unwrap(model)
        self.units = variant_units(self.model, granularity)
        if not self.units:
            raise ValueError("the model has no switchable hybrid layer (HybridConv2d/HybridLinear with op != 'mult'); "
                             "convert it first with shiftaddaug_plugin.convert.convert(model, "
                             "ConvertConfig(op='shift'))")

    @property
    def num_units(self) -> int:
        return len(self.units)

    def unit_names(self) -> list[list[str]]:
        """Layer names of each unit, shallow to deep."""
        return [[name for name, _ in unit] for unit in self.units]

    def progress(self, step: float) -> float:
        """Fraction of MF units at ``step``."""
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(float(step)):
            raise TypeError(f"block-variant step={step!r} must be a finite number of {self.unit}s")
        return schedule_progress(float(step), self.start, self.end)

    def num_mf(self, step: float) -> int:
        """Number of MF units at ``step``."""
        return mf_count(self.progress(step), self.num_units)

    def mf_layer_names(self, step: float) -> list[str]:
        """Names of the layers that are MF at ``step`` (shallow prefix)."""
        return [name for unit in mf_layers_at(self.progress(step), self.units) for name, _ in unit]

    def switching_units(self, step: float) -> range:
        """Indices of the units that turn MF at ``step`` (MF at ``step``, not at ``step - 1``)."""
        return range(self.num_mf(step - 1) if step - 1 >= 0 else 0, self.num_mf(step))

    def apply(self, step: float, model: nn.Module | None = None, *, optimizer: Any = None) -> int:
        """Set ``mf_enabled`` of every switchable layer for ``step``; returns the number of MF units. With ``remap``
        the adder layers switching at ``step`` get their target block remapped (once per model and step), and
        ``optimizer``'s moments of those weights rescaled.

        ``model`` defaults to the scheduled model; pass an EMA copy (``ema.module``) to give it the same state. A
        different model must have the same switchable layer names."""
        count = self.num_mf(step)
        target = self.model if model is None else unwrap(model)
        if model is None:
            units = self.units
        else:
            units = variant_units(target, self.granularity)
            if [[n for n, _ in u] for u in units] != self.unit_names():
                raise ValueError("block-variant: the given model's switchable layers differ from the scheduled "
                                 "model's; pass a copy of the same converted model (e.g. the EMA copy)")
        for i, unit in enumerate(units):
            for _, layer in unit:
                layer.mf_enabled = i < count
        if self.remap and self._remapped_at.get(id(target)) != step:
            self._remapped_at[id(target)] = step
            for i in self.switching_units(step):
                for _, layer in units[i]:
                    remap_switched_adder(layer, self.adder_prior_b, optimizer)
        return count

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(start={self.start:g}, end={self.end:g}, unit={self.unit!r}, "
                f"granularity={self.granularity!r}, units={self.num_units})")


@torch.no_grad()
def remap_switched_adder(layer: Any, b: float, optimizer: Any = None) -> int:
    """Quantile-match the target block of a hybrid adder layer that has just turned MF onto ``Laplace(0, b)``
    (module docstring). Returns the number of remapped weights (0 for other operators)."""
    if getattr(layer, "op", None) is not Op.ADDER:
        return 0
    weight = layer.weight
    o_t = layer.target_out_channels
    block = (slice(0, o_t),) if layer.depthwise else (slice(0, o_t), slice(0, layer.target_in_channels))
    values = weight.data[block]
    if values.numel() < 2:
        return 0
    mu, sigma = gauss_scale(values)
    weight.data[block] = gauss_to_laplace_matched(values, mu, sigma, 0.0, b)
    ratio = b / sigma
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == weight.shape:
            value[block] *= ratio ** (2 if key in SECOND_MOMENTS else 1)
    return int(values.numel())


def _mean_over(layers: dict[str, dict[str, Any]], names: Sequence[str], key: str) -> float:
    values = [layers[n][key] for n in names if n in layers and layers[n][key] == layers[n][key]]
    return sum(values) / len(values) if values else float("nan")


def switch_diagnostics(schedule: BlockVariantSchedule, step: float, images: torch.Tensor,
                       targets: torch.Tensor | None = None) -> dict[str, Any] | None:
    """What the layers turning MF at ``step`` read, with and without the remap (on two copies of the scheduled
    model; the model itself is not changed). ``None`` when no layer switches at ``step``.

    Per variant (``remap`` / ``no_remap``): ``mean_abs`` / ``kurtosis`` / ``channel_corr`` averaged over the switching
    layers (:func:`shiftaddaug_plugin.convert.diagnostics.mf_read_stats`), and the target network's loss / accuracy
    on the batch. ``already_mf``: the same averages over the adder layers that were MF before ``step`` (adder-trained
    weights: what the remap's prior should look like)."""
    from .convert.diagnostics import mf_read_stats

    units = schedule.switching_units(step)
    switching = [name for i in units for name, _ in schedule.units[i]]
    if not switching:
        return None
    before = [name for unit in schedule.units[: units.start] for name, layer in unit
              if getattr(layer, "op", None) is Op.ADDER]
    out: dict[str, Any] = {"step": step, "switching": switching}
    for key, remap in (("remap", True), ("no_remap", False)):
        twin = copy.deepcopy(schedule.model)
        BlockVariantSchedule(twin, schedule.start, schedule.end, schedule.unit, schedule.granularity, remap=remap,
                             adder_prior_std=schedule.adder_prior_b * math.sqrt(2.0)).apply(step)
        stats = mf_read_stats(twin, images, targets)
        out[key] = {k: _mean_over(stats["layers"], switching, k) for k in ("mean_abs", "kurtosis", "channel_corr")}
        out[key].update({k: stats[k] for k in ("target_loss", "target_acc") if k in stats})
        if key == "no_remap":
            out["already_mf"] = {k: _mean_over(stats["layers"], before, k) for k in ("mean_abs", "kurtosis")}
            out["already_mf"]["layers"] = len(before)
        del twin
    return out
