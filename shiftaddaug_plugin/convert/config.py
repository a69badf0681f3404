"""Conversion settings (docs/algorithms.md §3-§4): which operator the target channels use and how far layers widen.

:class:`ConvertConfig` is validated on construction (``__post_init__``) so that a bad setting fails where it is
written, with the fix in the message. :func:`augmented_width` is the single place that turns a target width and a
multiplier into a channel count (NetAug's ``make_divisible``, with ``multiplier == 1`` meaning "not widened").
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..ops import OP_TABLE, op_spec

__all__ = ["ConvertConfig", "augmented_width", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``), never
    more than 10 % below ``value`` (the MobileNet / NetAug rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def augmented_width(target: int, multiplier: float, divisor: int = 8) -> int:
    """Channel count of a group of ``target`` channels widened by ``multiplier`` (docs/algorithms.md §4).

    ``multiplier == 1`` returns ``target`` unchanged (no augmentation, even when ``target`` is not a multiple of
    ``divisor``); otherwise ``make_divisible(target * multiplier, divisor)``, never below ``target``."""
    if multiplier == 1.0:
        return int(target)
    return max(int(target), make_divisible(target * multiplier, divisor))


def _check_multipliers(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"ConvertConfig.{name} must be a list of floats >= 1.0, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise TypeError(f"ConvertConfig.{name} must contain finite numbers, got {v!r}")
        if float(v) < 1.0:
            raise ValueError(f"ConvertConfig.{name} entries must be >= 1.0 (1.0 = target width, no augmentation), "
                             f"got {v!r}; the target network is the narrowest member")
        out.append(float(v))
    if not out:
        raise ValueError(f"ConvertConfig.{name} is empty; use e.g. [1.0] to switch this augmentation off")
    return tuple(sorted(set(out)))


@dataclass
class ConvertConfig:
    """How :func:`~shiftaddaug_plugin.convert.convert` builds the hybrid network (docs/algorithms.md §3-§4).

    Attributes:
        op: target operator of converted convs: ``'shift'`` (default), ``'adder'``, ``'shiftadd'`` or ``'mult'``.
            Linear layers become shift (or, for ``'mult'``, multiplicative) classifiers.
        op_overrides: per-layer operator, keyed by module name (exact match first) or regular expression
            (``re.fullmatch`` against the module name, in insertion order). Overrides beat the two ``keep_*``
            switches.
        aug_width_mult_list: multipliers of block outputs, stem and heads (NetAug width list).
        aug_expand_list: multipliers of the mid channels of inverted-residual blocks (NetAug expand list).
        keep_first_conv_mult: the first conv applied to the model input stays multiplicative (AdderNet/ShiftAddAug
            keep the stem conv multiplicative); it is still widened.
        keep_classifier_mult: the output layers (classifier linear, segmentation logits conv) stay multiplicative.
        op_kwargs: operator settings passed to the hybrid layers; each layer receives only the keys its operator
            understands (``weight_bits``, ``act_int_bits``, ``act_frac_bits``, ``act_rounding`` for shift;
            ``eta`` for adder; both for shiftadd).
        remap: heterogeneous weight sharing (eq. 5) for adder/shiftadd layers: ``None`` (off), ``True``, a dict of
            ``WeightRemap`` keyword arguments.
        adder_init_std: AdderNet initialisation of the adder-only weights: at conversion the target block
            ``W[:O_t, :I_t]`` of every ``'adder'`` layer (the ``adder_weight`` of ``'shiftadd'`` layers) is redrawn
            from ``N(0, adder_init_std**2)``. AdderNet initialises adder filters with ``N(0, 1)``: they are compared
            with batch-normalised activations by ``|x - w|``, so they must live on the activations' scale. A conv's
            Kaiming weights (std ~ 1/sqrt(fan_in), 0.03-0.1 here) make every filter compute almost the same
            ``-sum |x|``; trained from there, our adder networks stayed at chance for 120 updates (results/). ``None``
            keeps the copied conv weights (e.g. to convert a network whose adder weights were trained already).
        divisor: widened channel counts are multiples of this (``make_divisible``).
    """

    op: str = "shift"
    op_overrides: dict[str, str] = field(default_factory=dict)
    aug_width_mult_list: list[float] = field(default_factory=lambda: [1.0, 1.6, 2.2])
    aug_expand_list: list[float] = field(default_factory=lambda: [1.0, 1.6, 2.2, 2.8])
    keep_first_conv_mult: bool = True
    keep_classifier_mult: bool = False
    op_kwargs: dict[str, Any] = field(default_factory=dict)
    remap: bool | Mapping[str, Any] | None = None
    adder_init_std: float | None = 1.0
    divisor: int = 8

    def __post_init__(self) -> None:
        self.op = op_spec(self.op, where="ConvertConfig.op").op.value  # plain str: configs go into checkpoints
        if not isinstance(self.op_overrides, Mapping):
            raise TypeError("ConvertConfig.op_overrides must be a dict {module name or regex: op}, got "
                            f"{type(self.op_overrides).__name__}")
        self.op_overrides = dict(self.op_overrides)
        for key, op in self.op_overrides.items():
            if not isinstance(key, str) or not key:
                raise TypeError("ConvertConfig.op_overrides keys must be non-empty module names or regexes, got "
                                f"{key!r}")
            self.op_overrides[key] = op_spec(op, where=f"ConvertConfig.op_overrides[{key!r}]").op.value
            try:
                re.compile(key)
            except re.error as err:
                raise ValueError(f"ConvertConfig.op_overrides key {key!r} is neither a plain module name nor a valid "
                                 f"regular expression ({err}); escape special characters with re.escape") from None
        self.aug_width_mult_list = list(_check_multipliers("aug_width_mult_list", self.aug_width_mult_list))
        self.aug_expand_list = list(_check_multipliers("aug_expand_list", self.aug_expand_list))
        for name in ("keep_first_conv_mult", "keep_classifier_mult"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ConvertConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.op_kwargs is None:
            self.op_kwargs = {}
        if not isinstance(self.op_kwargs, Mapping):
            raise TypeError(f"ConvertConfig.op_kwargs must be a dict, got {type(self.op_kwargs).__name__}")
        self.op_kwargs = dict(self.op_kwargs)
        known = frozenset().union(*(spec.kwargs for spec in OP_TABLE.values()))
        unknown = sorted(set(self.op_kwargs) - known)
        if unknown:
            raise ValueError(f"ConvertConfig.op_kwargs has unknown keys {unknown}; allowed: {sorted(known)}")
        if self.remap is not None and not isinstance(self.remap, (bool, Mapping)):
            raise TypeError("ConvertConfig.remap must be None, a bool or a dict of WeightRemap keyword arguments, got "
                            f"{type(self.remap).__name__} (layers get their own WeightRemap each)")
        if isinstance(self.remap, Mapping):
            self.remap = dict(self.remap)
        if self.adder_init_std is not None and (
            isinstance(self.adder_init_std, bool) or not isinstance(self.adder_init_std, (int, float))
            or not (math.isfinite(float(self.adder_init_std)) and self.adder_init_std > 0)
        ):
            raise ValueError(f"ConvertConfig.adder_init_std must be a positive finite number (AdderNet: 1.0) or None "
                             f"(keep the copied conv weights), got {self.adder_init_std!r}")
        if self.adder_init_std is not None:
            self.adder_init_std = float(self.adder_init_std)
        if isinstance(self.divisor, bool) or not isinstance(self.divisor, int) or self.divisor < 1:
            raise ValueError(f"ConvertConfig.divisor must be a positive int, got {self.divisor!r}")

    # ------------------------------------------------------------------------------------------- helpers
    def override_for(self, name: str) -> str | None:
        """The operator ``op_overrides`` assigns to module ``name`` (exact key first, then regexes), or ``None``."""
        if name in self.op_overrides:
            return self.op_overrides[name]
        for pattern, op in self.op_overrides.items():
            if re.fullmatch(pattern, name):
                return op
        return None

    def kwargs_for(self, op: str) -> dict[str, Any]:
        """The subset of ``op_kwargs`` that operator ``op`` understands."""
        return {k: v for k, v in self.op_kwargs.items() if k in op_spec(op).kwargs}

    def remap_for(self, op: str) -> bool | dict[str, Any] | None:
        """``remap`` for adder/shiftadd layers, ``None`` for the others (remap only exists for adders, eq. 5)."""
        if not op_spec(op).has_adder or self.remap in (None, False):
            return None
        return dict(self.remap) if isinstance(self.remap, Mapping) else True
