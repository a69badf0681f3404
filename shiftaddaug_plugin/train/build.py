"""Model construction of ``shiftaddaug-train``: the registered ``shiftadd_*`` models (with their variant kwargs),
NAS-found ``shiftadd_custom`` architectures, or any timm model converted with ``ConvertConfig``."""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from shiftaddaug_plugin import register_timm_models
from shiftaddaug_plugin.convert import (
    ConvertConfig,
    convert,
)
from shiftaddaug_plugin.models import REFERENCE_ARCHS
from shiftaddaug_plugin.nas.custom_model import arch_recipe

__all__ = ["build_model", "CUSTOM_MODEL"]

#: timm entrypoint of NAS-found architectures (:mod:`shiftaddaug_plugin.nas.custom_model`), built like ``shiftadd_*``
CUSTOM_MODEL = "shiftadd_custom"


# ------------------------------------------------------------------------------------------------- model
def build_model(args: argparse.Namespace, num_classes: int, input_size: tuple[int, int, int]
                ) -> tuple[nn.Module, dict[str, Any]]:
    """The hybrid training model and the recipe that rebuilds its exported target (``exported_target.json``).

    ``shiftadd_*`` models (the reference nets and the NAS's ``shiftadd_custom``) are built by their timm entrypoints
    with ``aug=True`` (``--no-aug``: augmentation lists ``[1.0]``, i.e. no augmented channel, so the baseline trains
    exactly the target network through the same code); ``op`` and the other ``--model-kwargs`` pass through (for
    ``shiftadd_custom``: default op = the arch's ``base_op``, per-block operators and depth augmentation from the
    arch; its ``arch`` is stored inline in the rebuild recipe). Any other timm model is created plain and converted
    with ``ConvertConfig(op=<model-kwargs op, default shift>)``.
    """
    import timm

    register_timm_models()

    kwargs = dict(args.model_kwargs)
    common: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=input_size[0],
                                  drop_rate=args.drop)
    if args.drop_path is not None:
        common["drop_path_rate"] = args.drop_path
    width = [1.0] if args.no_aug else args.aug_width_mult_list
    expand = [1.0] if args.no_aug else args.aug_expand_list
    if args.model in REFERENCE_ARCHS or args.model == CUSTOM_MODEL:
        if args.model == CUSTOM_MODEL and kwargs.get("arch") is not None:

            kwargs["arch"] = arch_recipe(kwargs["arch"])  # the exported model rebuilds without the arch file
        aug_kwargs: dict[str, Any] = {"aug": True}
        if width is not None:
            aug_kwargs["aug_width_mult_list"] = width
        if expand is not None:
            aug_kwargs["aug_expand_list"] = expand
        model = timm.create_model(args.model, **common, **kwargs, **aug_kwargs)
        meta = {"rebuild": "entrypoint", "model_kwargs": kwargs}
    else:
        op = kwargs.pop("op", "shift")
        convert_kwargs = kwargs.pop("convert_kwargs", None) or {}
        try:
            model = timm.create_model(args.model, **common, **kwargs)
        except RuntimeError as err:
            raise ValueError(f"--model {args.model!r}: {err}; list models with timm.list_models()") from err
        cfg: dict[str, Any] = dict(op=op, **convert_kwargs)
        if width is not None:
            cfg["aug_width_mult_list"] = width
        if expand is not None:
            cfg["aug_expand_list"] = expand
        model = convert(model, ConvertConfig(**cfg), example_input=torch.zeros(1, *input_size))
        meta = {"rebuild": "convert", "model_kwargs": kwargs, "convert_config": dict(op=op, **convert_kwargs)}
    meta.update(model=args.model, num_classes=num_classes, input_size=list(input_size))
    return model, meta
