"""timm registrations of the ShiftAddAug / NetAug reference tiny networks (docs/algorithms.md §9, docs/ARCHITECTURE.md).

``shiftadd_mcunet``, ``shiftadd_mbv2_tiny`` and ``shiftadd_proxyless`` are the exact reference definitions used by
NetAug and ShiftAddAug (arXiv 2407.02881 §4), built on timm's ``EfficientNet`` from block strings, so
``features_only``, ``out_indices``, ``output_stride``, ``feature_info``, ``reset_classifier``, ``in_chans``,
``num_classes``, ``drop_rate`` and ``drop_path_rate`` behave like any timm model::

    import shiftaddaug_plugin.models  # registers the three models
    model = timm.create_model('shiftadd_mcunet', num_classes=10, in_chans=1)
    backbone = timm.create_model('shiftadd_mbv2_tiny', features_only=True, out_indices=(1, 2, 3, 4))

Variant keyword arguments (what ``train.py --model-kwargs op=adder aug=true`` passes; strings are parsed):

* ``op``: ``'mult'`` (default) | ``'shift'`` | ``'adder'`` | ``'shiftadd'``: operator of the target network.
* ``aug``: build the hybrid augmentation network (ShiftAddAug eq. 4, NetAug) instead of the slim target.
* ``aug_width_mult_list`` / ``aug_expand_list``: augmentation multipliers (only with ``aug=True``; defaults are
  NetAug's per-model lists, docs/algorithms.md §4).
* ``width_mult``: scales the reference widths (make-divisible by 8), default 1.0.
* ``convert_kwargs``: extra fields for ``shiftaddaug_plugin.convert.ConvertConfig``.

``op='mult', aug=False`` is the plain multiplicative network (an ``EfficientNet``). Every other variant is that
network passed through the converter: ``convert(model, ConvertConfig(...))`` for ``aug=True``, and
``export(convert(model, ConvertConfig(op=op, aug_width_mult_list=[1.0], aug_expand_list=[1.0])))`` for a slim
multiplication-free network. Conversion happens before timm's ``features_only`` wrapping and before
``pretrained=True`` loading, so a checkpoint given with ``pretrained_cfg_overlay=dict(file=...)`` must come from the
same variant. ``reset_classifier`` (timm's) installs a plain ``nn.Linear`` head, also on converted variants.

MCUNet has no 1x1 head conv (its head is an MB block 96->160, then GAP -> FC). timm's ``EfficientNet`` expresses
that natively: ``num_features=0`` makes ``conv_head``/``bn2`` ``nn.Identity`` and sets ``num_features`` to the last
block width, so no subclass is needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._efficientnet_builder import (
    decode_arch_def,
    resolve_act_layer,
    resolve_bn_args,
    round_channels,
)
from timm.models.efficientnet import EfficientNet

from shiftaddaug_plugin.convert import ConvertConfig, convert, export

from ..ops import op_spec

__all__ = [
    "ModelVariant",
    "ReferenceArch",
    "StageSpec",
    "REFERENCE_ARCHS",
    "parse_variant_kwargs",
    "apply_variant",
    "arch_block_strings",
    "shiftadd_mcunet",
    "shiftadd_mbv2_tiny",
    "shiftadd_proxyless",
]


_TRUE_STRINGS = frozenset({"true", "1", "yes", "y", "on"})
_FALSE_STRINGS = frozenset({"false", "0", "no", "n", "off"})


# --------------------------------------------------------------------------------------------------------------
# Reference architectures (docs/algorithms.md §9)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks: per-block expand ratios and depthwise kernels, first-block stride."""

    expand: tuple[float, ...]
    kernel: tuple[int, ...]
    stride: int
    out_chs: int

    def __post_init__(self) -> None:
        if len(self.expand) != len(self.kernel) or not self.expand:
            raise ValueError(f"stage needs one expand ratio per kernel size, got {self.expand} and {self.kernel}")


@dataclass(frozen=True)
class ReferenceArch:
    """A reference network: stem conv3x3 s2 -> depthwise-separable block -> stages -> head MB block
    -> optional 1x1 head conv -> GAP -> FC (docs/algorithms.md §9)."""

    stem_chs: int
    ds_chs: int
    stages: tuple[StageSpec, ...]
    head_block: StageSpec  #: one MB block (stride 1)
    head_conv_chs: int  #: 1x1 conv after the head block; 0 = none (MCUNet)
    head_conv_min_chs: int  #: floor of the (scaled) head conv width (ProxylessNAS keeps >= 1280)
    input_size: int  #: reference resolution (px)
    aug_width_mult_list: tuple[float, ...]  #: NetAug defaults (docs/algorithms.md §4)
    aug_expand_list: tuple[float, ...] = field(default=(1.0, 1.6, 2.2, 2.8))


def _uniform_stage(expand: float, kernel: int, n: int, stride: int, out_chs: int) -> StageSpec:
    return StageSpec((expand,) * n, (kernel,) * n, stride, out_chs)


#: MCUNet (mcunet-in3): 81.8M MACs, 0.74M params at 176 px, 1000 classes. Head MB 96->160 (mid 480 = e5), no head conv.
_MCUNET = ReferenceArch(
    stem_chs=16,
    ds_chs=8,
    stages=(
        StageSpec((3, 5, 5, 4), (7, 3, 7, 5), 2, 16),
        StageSpec((5, 5, 5), (5, 5, 5), 2, 24),
        StageSpec((5, 6, 4), (3, 7, 5), 2, 40),
        StageSpec((5, 5, 5), (5, 7, 3), 1, 48),
        StageSpec((6, 5, 4), (3, 7, 3), 2, 96),
    ),
    head_block=StageSpec((5,), (7,), 1, 160),
    head_conv_chs=0,
    head_conv_min_chs=0,
    input_size=176,
    aug_width_mult_list=(1.0, 1.6, 2.2),
)

#: MobileNetV2-Tiny: MobileNetV2 w0.35 (divisor 8), last conv 112->448. 23.5M MACs, 0.75M params at 144 px.
_MBV2_TINY = ReferenceArch(
    stem_chs=16,
    ds_chs=8,
    stages=(
        _uniform_stage(6, 3, 2, 2, 8),
        _uniform_stage(6, 3, 3, 2, 16),
        _uniform_stage(6, 3, 4, 2, 24),
        _uniform_stage(6, 3, 3, 1, 32),
        _uniform_stage(6, 3, 3, 2, 56),
    ),
    head_block=StageSpec((6,), (3,), 1, 112),
    head_conv_chs=448,
    head_conv_min_chs=0,
    input_size=144,
    aug_width_mult_list=(1.0, 1.8, 2.6),
)

#: ProxylessNAS-Mobile w0.35: widths [32,16,32,40,80,96,192]*0.35 -> [16,8,16,16,32,32,64], head MB k7 e6 -> 112
#: -> 1x1 conv 1280 (never narrower than 1280). 35.7M MACs, 1.78M params at 160 px.
_PROXYLESS = ReferenceArch(
    stem_chs=16,
    ds_chs=8,
    stages=(
        StageSpec((3, 3), (5, 3), 2, 16),
        StageSpec((3, 3, 3, 3), (7, 3, 5, 5), 2, 16),
        StageSpec((6, 3, 3, 3), (7, 5, 5, 5), 2, 32),
        StageSpec((6, 3, 3, 3), (5, 5, 5, 5), 1, 32),
        StageSpec((6, 6, 3, 3), (7, 7, 7, 7), 2, 64),
    ),
    head_block=StageSpec((6,), (7,), 1, 112),
    head_conv_chs=448,  # 1280 * 0.35; floored at 1280 below, as ProxylessNAS does for width multipliers <= 1
    head_conv_min_chs=1280,
    input_size=160,
    aug_width_mult_list=(1.0, 1.8, 2.6),
)

REFERENCE_ARCHS: dict[str, ReferenceArch] = {
    "shiftadd_mcunet": _MCUNET,
    "shiftadd_mbv2_tiny": _MBV2_TINY,
    "shiftadd_proxyless": _PROXYLESS,
}


def _fmt_ratio(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def arch_block_strings(arch: ReferenceArch) -> list[list[str]]:
    """timm block strings of ``arch``: one stack for the DS block, one per stage, one for the head block.

    A stage's first block never has a residual (``noskip``), even when stride 1 and in == out (ProxylessNAS stage 4
    at w0.35 is 32 -> 32, stride 1): the reference networks add shortcuts only inside a stage (docs/algorithms.md §9).
    """
    stacks: list[list[str]] = [[f"ds_r1_k3_s1_c{arch.ds_chs}_noskip"]]
    for stage in (*arch.stages, arch.head_block):
        blocks = []
        for i, (expand, kernel) in enumerate(zip(stage.expand, stage.kernel)):
            stride = stage.stride if i == 0 else 1
            block = f"ir_r1_k{kernel}_s{stride}_e{_fmt_ratio(expand)}_c{stage.out_chs}"
            blocks.append(block + "_noskip" if i == 0 else block)
        stacks.append(blocks)
    return stacks


# --------------------------------------------------------------------------------------------------------------
# Variant keyword arguments
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelVariant:
    """Which network an entrypoint builds (parsed ``--model-kwargs``)."""

    op: str = "mult"
    aug: bool = False
    aug_width_mult_list: tuple[float, ...] = (1.0,)
    aug_expand_list: tuple[float, ...] = (1.0,)
    width_mult: float = 1.0
    convert_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_plain(self) -> bool:
        """True for the ordinary multiplicative network (no converter involved)."""
        return self.op == "mult" and not self.aug


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS:
            return True
        if text in _FALSE_STRINGS:
            return False
    raise ValueError(f"{name}={value!r} is not a boolean; use true/false (or 1/0)")


def _parse_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be a number, e.g. {name}=0.5")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number, e.g. {name}=0.5") from None
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r} must be finite")
    return number


def _parse_float_list(value: Any, name: str) -> tuple[float, ...]:
    """Accept ``'1.0,1.6'``, ``'[1.0, 1.6]'``, ``'1.0 1.6'``, ``(1.0, 1.6)``, ``[1, 1.6]`` or a single number;
    return the sorted distinct values, each >= 1.0 (1.0 = no augmentation of that block)."""
    items: Iterable[Any]
    if isinstance(value, str):
        text = value.strip().strip("[]()").replace(",", " ")
        items = text.split()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Sequence):
        items = value
    else:
        raise ValueError(f"{name}={value!r} must be a list of numbers, e.g. {name}=1.0,1.6,2.2")
    numbers = [_parse_float(item, name) for item in items]
    if not numbers:
        raise ValueError(f"{name} is empty; give at least one multiplier, e.g. {name}=1.0,1.6,2.2")
    bad = [n for n in numbers if n < 1.0]
    if bad:
        raise ValueError(f"{name}={value!r}: augmentation multipliers must be >= 1.0 (got {bad})")
    return tuple(sorted(set(numbers)))


def parse_variant_kwargs(kwargs: dict[str, Any], arch: ReferenceArch) -> ModelVariant:
    """Pop the variant keys out of ``kwargs`` (in place) and validate them; ``ValueError`` on bad values.

    ``None`` means "default" for every key (timm passes unset options as ``None``).
    """
    op_raw = kwargs.pop("op", None)
    op = "mult" if op_raw is None else op_spec(str(op_raw).strip(), where="model kwarg op").op.value
    aug_raw = kwargs.pop("aug", None)
    aug = False if aug_raw is None else _parse_bool(aug_raw, "aug")
    width_raw = kwargs.pop("aug_width_mult_list", None)
    expand_raw = kwargs.pop("aug_expand_list", None)
    if not aug and (width_raw is not None or expand_raw is not None):
        given = [n for n, v in (("aug_width_mult_list", width_raw), ("aug_expand_list", expand_raw)) if v is not None]
        raise ValueError(f"{', '.join(given)} only apply to the augmentation network; pass aug=true or drop them")
    if aug:
        width_list = (
            arch.aug_width_mult_list if width_raw is None else _parse_float_list(width_raw, "aug_width_mult_list")
        )
        expand_list = arch.aug_expand_list if expand_raw is None else _parse_float_list(expand_raw, "aug_expand_list")
    else:
        width_list = expand_list = (1.0,)
    wm_raw = kwargs.pop("width_mult", None)
    width_mult = 1.0 if wm_raw is None else _parse_float(wm_raw, "width_mult")
    if width_mult <= 0:
        raise ValueError(f"width_mult={wm_raw!r} must be > 0")
    convert_kwargs = kwargs.pop("convert_kwargs", None) or {}
    if not isinstance(convert_kwargs, dict):
        raise ValueError(f"convert_kwargs={convert_kwargs!r} must be a dict of ConvertConfig fields")
    if convert_kwargs and op == "mult" and not aug:
        raise ValueError("convert_kwargs only apply to converted variants; set op to shift/adder/shiftadd or aug=true")
    return ModelVariant(op, aug, tuple(width_list), tuple(expand_list), width_mult, dict(convert_kwargs))


def apply_variant(model: nn.Module, variant: ModelVariant, example_input: torch.Tensor | None = None) -> nn.Module:
    """Turn the multiplicative reference network into ``variant`` with the converter (docs/algorithms.md §3/§4).

    ``aug=True``: the hybrid training network ``convert(model, config)``; otherwise the slim target
    ``export(convert(model, config))`` with no augmentation (width and expand lists ``[1.0]``).
    ``example_input`` is the converter's traced pass (channel structure only: a small input is enough);
    default: ``1 x C x 64 x 64`` with ``C`` the stem conv's input channels.
    """
    if variant.is_plain:
        return model
    config = ConvertConfig(
        op=variant.op,
        aug_width_mult_list=list(variant.aug_width_mult_list),
        aug_expand_list=list(variant.aug_expand_list),
        **variant.convert_kwargs,
    )
    if example_input is None:
        stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        example_input = torch.zeros(1, stem.in_channels, 64, 64, device=stem.weight.device, dtype=stem.weight.dtype)
    hybrid = convert(model, config, example_input=example_input)
    return hybrid if variant.aug else export(hybrid)


# --------------------------------------------------------------------------------------------------------------
# timm glue
# --------------------------------------------------------------------------------------------------------------
def _build_model(variant: ModelVariant, **kwargs: Any) -> nn.Module:
    """``model_cls`` for ``build_model_with_cfg``: the reference ``EfficientNet``, converted to ``variant``
    before timm wraps it for ``features_only`` (so feature extraction also works on hybrid/MF networks)."""
    return apply_variant(EfficientNet(**kwargs), variant)


def _has_weight_source(kwargs: dict[str, Any]) -> bool:
    sources = ("file", "url", "state_dict", "hf_hub_id")
    for key in ("pretrained_cfg_overlay", "pretrained_cfg"):
        cfg = kwargs.get(key)
        if cfg is None or isinstance(cfg, str):  # None or a tag name: no tag of ours has weights
            continue
        get = cfg.get if isinstance(cfg, dict) else lambda name, c=cfg: getattr(c, name, None)
        if any(get(s) for s in sources):
            return True
    return False


def _create(model_name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    arch = REFERENCE_ARCHS[model_name]
    variant = parse_variant_kwargs(kwargs, arch)
    if pretrained and not _has_weight_source(kwargs):
        raise ValueError(
            f"{model_name}: no pretrained weights are published; use pretrained=False, or load your own checkpoint "
            f"with timm.create_model({model_name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='ckpt.pth'))"
            " or checkpoint_path=..."
        )
    round_chs_fn = partial(round_channels, multiplier=variant.width_mult)
    num_features = 0
    if arch.head_conv_chs:
        num_features = max(arch.head_conv_min_chs, round_chs_fn(arch.head_conv_chs))
    model_kwargs = dict(
        block_args=decode_arch_def(arch_block_strings(arch)),
        num_features=num_features,
        stem_size=arch.stem_chs,
        round_chs_fn=round_chs_fn,
        act_layer=resolve_act_layer(kwargs, "relu6"),
        norm_layer=kwargs.pop("norm_layer", None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        **kwargs,
    )
    return build_model_with_cfg(
        partial(_build_model, variant),
        model_name,
        pretrained,
        feature_cfg=dict(flatten_sequential=True),
        **model_kwargs,
    )


def _cfg(input_size: int, **kwargs: Any) -> dict[str, Any]:
    pool = math.ceil(input_size / 32)
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, input_size, input_size),
        "pool_size": (pool, pool),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg(arch.input_size) for name, arch in REFERENCE_ARCHS.items()})


@register_model
def shiftadd_mcunet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MCUNet (mcunet-in3): 81.8M MACs / 0.74M params at 176 px; ReLU6; no head conv (docs/algorithms.md §9)."""
    return _create("shiftadd_mcunet", pretrained, **kwargs)


@register_model
def shiftadd_mbv2_tiny(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV2-Tiny (MobileNetV2 w0.35, last conv 112->448): 23.5M MACs / 0.75M params at 144 px (docs/algorithms.md
    §9)."""
    return _create("shiftadd_mbv2_tiny", pretrained, **kwargs)


@register_model
def shiftadd_proxyless(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ProxylessNAS-Mobile w0.35: 35.7M MACs / 1.78M params at 160 px (docs/algorithms.md §9)."""
    return _create("shiftadd_proxyless", pretrained, **kwargs)
