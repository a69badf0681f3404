"""timm entrypoint ``shiftadd_custom``: any architecture found by the NAS as a timm ``EfficientNet`` (docs/algorithms.md
§7,
docs/ARCHITECTURE.md).

    import shiftaddaug_plugin.nas.custom_model   # registers 'shiftadd_custom' (imports timm)
    model = timm.create_model('shiftadd_custom', arch='runs/nas/arch.json', num_classes=10, in_chans=1)

    shiftaddaug-train --model shiftadd_custom --model-kwargs arch=runs/nas/arch.json ...

``arch`` is an :class:`~shiftaddaug_plugin.nas.space.Arch`, its dict, a JSON string or a JSON file (what the NAS
CLI writes). The network is built from the arch's timm block strings (stem conv3x3 s2 -> DS block -> stages of
inverted residual blocks -> optional 1x1 head conv -> GAP -> FC, ReLU6), so ``features_only``, ``out_indices``,
``feature_info``, ``reset_classifier``, ``in_chans`` and ``num_classes`` behave like any timm model.

Variant keyword arguments are those of the reference models (``shiftaddaug_plugin.models``: ``op``, ``aug``,
``aug_width_mult_list``, ``aug_expand_list``, ``convert_kwargs``; defaults: NetAug's MCUNet lists), with two
additions taken from the arch:

* per-block operators (NASA's hybrid space): blocks whose ``op`` differs from the model ``op`` (default: the arch's
  ``base_op``) become ``ConvertConfig.op_overrides`` entries;
* a depth-augmented arch (JSON key ``"depth_aug"``, written by :func:`shiftaddaug_plugin.nas.stage2.save_depth_aug`):
  with ``aug=True`` the deep network is built, its unselected blocks wrapped in
  :class:`~shiftaddaug_plugin.nas.stage2.DepthAugBlock` (skipped in ``Mode.TARGET``, kept multiplicative) so the
  trainer's target pass skips them and its augmented pass runs them; :func:`shiftaddaug_plugin.convert.export`
  (= :func:`shiftaddaug_plugin.nas.stage2.export_target`) drops them. With ``aug=False`` the slim target
  (unselected blocks dropped) is built directly.

``shiftaddaug_plugin.register_timm_models()`` imports this module (registration); it must not import optuna.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._efficientnet_builder import (
    decode_arch_def,
    resolve_act_layer,
    resolve_bn_args,
)
from timm.models.efficientnet import EfficientNet
from torch import nn

from shiftaddaug_plugin.convert import ConvertConfig, convert, export
from shiftaddaug_plugin.models import parse_variant_kwargs

from .space import Arch, load_arch
from .stage2 import load_depth_aug, wrap_depth_augmentation

__all__ = ["DEFAULT_AUG_WIDTH_MULT_LIST", "DEFAULT_AUG_EXPAND_LIST", "efficientnet_kwargs", "build_efficientnet",
           "arch_recipe", "shiftadd_custom"]

#: default augmentation lists (NetAug's MCUNet lists, docs/algorithms.md §4)
DEFAULT_AUG_WIDTH_MULT_LIST: tuple[float, ...] = (1.0, 1.6, 2.2)
DEFAULT_AUG_EXPAND_LIST: tuple[float, ...] = (1.0, 1.6, 2.2, 2.8)


def _identity_round(channels: int, *args: Any, **kwargs: Any) -> int:
    """Arch widths are final channel counts: no timm re-rounding."""
    return int(channels)


def efficientnet_kwargs(arch: Arch, **kwargs: Any) -> dict[str, Any]:
    """``EfficientNet(**...)`` keyword arguments of ``arch`` (timm kwargs such as ``num_classes`` pass through)."""
    return dict(
        block_args=decode_arch_def(arch.block_strings()),
        num_features=arch.head_conv_chs,
        stem_size=arch.stem_chs,
        fix_stem=True,
        round_chs_fn=_identity_round,
        act_layer=resolve_act_layer(kwargs, "relu6"),
        norm_layer=kwargs.pop("norm_layer", None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        **kwargs,
    )


def build_efficientnet(arch: Arch | Any, **kwargs: Any) -> EfficientNet:
    """The plain multiplicative timm ``EfficientNet`` of ``arch`` (no registry, no pretrained handling)."""
    return EfficientNet(**efficientnet_kwargs(load_arch(arch), **kwargs))


def arch_recipe(arch: Any) -> dict[str, Any]:
    """``arch`` (Arch / dict / JSON string / JSON file) as a self-contained, JSON-plain dict with its depth-augmentation
    selection (``depth_aug``) if any: ``shiftadd_custom(arch=arch_recipe(a))`` builds what ``arch=a`` builds, without
    the original file (the trainer stores it in ``exported_target.json``)."""

    deep, selection = load_depth_aug(arch)
    data = deep.to_dict()
    if selection is not None:
        data["depth_aug"] = selection.to_dict()
    return data


def _convert(model: nn.Module, op: str, overrides: dict[str, str], aug: bool, width: tuple[float, ...],
             expand: tuple[float, ...], convert_kwargs: dict[str, Any]) -> nn.Module:

    kwargs = dict(convert_kwargs)
    kwargs["op_overrides"] = {**overrides, **dict(kwargs.get("op_overrides") or {})}  # the user's entries win
    config = ConvertConfig(op=op, aug_width_mult_list=list(width if aug else (1.0,)),
                           aug_expand_list=list(expand if aug else (1.0,)), **kwargs)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    example = torch.zeros(1, stem.in_channels, 64, 64, device=stem.weight.device, dtype=stem.weight.dtype)
    hybrid = convert(model, config, example_input=example)
    return hybrid if aug else export(hybrid)


def _build(arch: Arch, variant: Any, selection: Any, **kwargs: Any) -> nn.Module:
    """``model_cls`` for ``build_model_with_cfg``: plain / converted / depth-augmented network."""

    overrides = arch.op_overrides(default_op=variant.op)
    if selection is not None and variant.aug:
        model = EfficientNet(**kwargs)
        wrap_depth_augmentation(model, arch, selection)
        for i, j in selection.unselected():  # augmentation-only blocks need no MF operator
            overrides[arch.block_module_name(i, j).replace(".", r"\.") + r"\..+"] = "mult"
    else:
        model = EfficientNet(**kwargs)
    plain = variant.op == "mult" and not variant.aug and all(op == "mult" for op in overrides.values())
    if plain and not variant.convert_kwargs:
        return model
    return _convert(model, variant.op, overrides, variant.aug, variant.aug_width_mult_list,
                    variant.aug_expand_list, variant.convert_kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 32, 32), "pool_size": (1, 1), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv_stem", "classifier": "classifier", **kwargs,
    }


default_cfgs = generate_default_cfgs({"shiftadd_custom": _cfg()})


@register_model
def shiftadd_custom(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> nn.Module:
    """A NAS-found architecture (module docstring). ``arch``: Arch / dict / JSON string / JSON file path."""

    if arch is None:
        raise ValueError("shiftadd_custom needs arch=<arch.json> (written by python -m shiftaddaug_plugin.nas.cli "
                         "search), e.g. --model-kwargs arch=runs/nas/arch.json")
    if pretrained:
        raise ValueError("shiftadd_custom has no published weights; use pretrained=False and checkpoint_path=...")
    deep, selection = load_depth_aug(arch)
    convert_kwargs = kwargs.pop("convert_kwargs", None) or {}
    if not isinstance(convert_kwargs, dict):
        raise ValueError(f"convert_kwargs={convert_kwargs!r} must be a dict of ConvertConfig fields")
    if kwargs.get("op") is None:
        kwargs["op"] = deep.base_op
    # parse_variant_kwargs reads only the two default augmentation lists from its arch argument
    defaults = SimpleNamespace(aug_width_mult_list=DEFAULT_AUG_WIDTH_MULT_LIST,
                               aug_expand_list=DEFAULT_AUG_EXPAND_LIST)
    variant = dataclasses.replace(parse_variant_kwargs(kwargs, defaults),  # type: ignore[arg-type]  # duck-typed
                                  convert_kwargs=dict(convert_kwargs))
    if variant.width_mult != 1.0:
        raise ValueError("shiftadd_custom: width_mult does not apply (the arch fixes every width); drop it")
    built = deep if selection is None or variant.aug else selection.target_arch(deep)
    model_kwargs = efficientnet_kwargs(built, **kwargs)
    return build_model_with_cfg(
        partial(_build, built, variant, selection if variant.aug else None),
        "shiftadd_custom", pretrained, feature_cfg=dict(flatten_sequential=True), **model_kwargs,
    )
