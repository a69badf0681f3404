"""``ShiftAddAugEncoderDecoder``: an mmseg ``EncoderDecoder`` trained with ShiftAddAug (docs/algorithms.md §4,
docs/ARCHITECTURE.md).

At build time the backbone, neck and heads are converted together by :func:`shiftaddaug_plugin.convert.convert`
into one hybrid network (target channels multiplication-free, augmented channels multiplicative, eq. 4), so every
parameter exists before mmengine builds the optimizer and the DDP wrapper.

``loss()`` holds both forward passes (mmengine's DDP wrapper re-implements ``train_step`` and never calls the
model's own): the target pass gives ``target.*`` losses, then one augmented model with sampled widths gives
``alpha``-weighted ``aug.*`` losses (NetAug / ShiftAddAug: ``L(W_t) + alpha * L(W_a)``). mmengine sums every key
containing ``'loss'``, so the stock ``train_step`` optimises the joint loss. ``predict`` and ``tensor`` modes run
the target network.

``deploy=True`` builds the exported (slim, multiplication-free) structure instead, so an exported checkpoint
(:mod:`.export`) loads into it and mmseg's test tools evaluate it unchanged.
"""
from __future__ import annotations

import copy
import random
import re
from typing import Any, Mapping

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn

from shiftaddaug_plugin.augment import WidthSampler, joint_loss
from shiftaddaug_plugin.convert import ConvertConfig, convert, export
from shiftaddaug_plugin.convert.plan import PLAN_ATTR
from shiftaddaug_plugin.modes import Mode, set_mode

__all__ = ["ShiftAddAugEncoderDecoder", "SegmentorParts", "scale_losses"]


class SegmentorParts(nn.Module):
    """Backbone, neck and heads of a segmentor as one module, so the converter sees (and widens consistently) the
    whole graph, auxiliary heads included: ``forward`` returns the outputs of every head."""

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, decode_head: nn.Module,
                 auxiliary_head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def forward(self, x: Tensor) -> list[Tensor]:  # noqa: D102
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        outs = [self.decode_head(feats)]
        if isinstance(self.auxiliary_head, nn.ModuleList):
            outs.extend(head(feats) for head in self.auxiliary_head)
        elif self.auxiliary_head is not None:
            outs.append(self.auxiliary_head(feats))
        return outs


def scale_losses(losses: Mapping[str, Any], weight: float) -> dict[str, Any]:
    """Multiply every entry whose key contains ``'loss'`` (tensor or list of tensors) by ``weight``; keep metrics
    such as ``acc_seg`` unscaled."""
    out: dict[str, Any] = {}
    for key, value in losses.items():
        if "loss" not in key:
            out[key] = value
        elif isinstance(value, Tensor):
            out[key] = value * weight
        elif isinstance(value, (list, tuple)):
            out[key] = [v * weight for v in value]
        else:
            raise TypeError(f"loss {key!r} is a {type(value).__name__}; expected a tensor or a list of tensors")
    return out


def _plain(value: Any) -> Any:
    """ConfigDict / tuple trees -> plain dicts and lists (ConvertConfig and checkpoints want plain types)."""
    if isinstance(value, (ConfigDict, dict)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@MODELS.register_module()
class ShiftAddAugEncoderDecoder(EncoderDecoder):
    """EncoderDecoder whose backbone, neck and heads form a ShiftAddAug hybrid network.

    Args:
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg, data_preprocessor, pretrained, init_cfg:
            as ``mmseg.models.EncoderDecoder`` (they describe the *target* network).
        convert_cfg: fields of :class:`shiftaddaug_plugin.convert.ConvertConfig` (``op``, ``aug_width_mult_list``,
            ``aug_expand_list``, ``keep_first_conv_mult``, ``op_kwargs``, ``remap`` ...).
        alpha: weight of the augmented loss (ShiftAddAug: 1.0). ``0`` trains the target network alone (direct
            training of the same multiplication-free network, the baseline).
        example_input_shape: ``(N, C, H, W)`` of the zero tensor the converter traces the graph with.
        sample_seed: seed of the per-step width sampling; the widths of step ``i`` depend only on
            ``(sample_seed, i)``, so all DDP ranks sample alike and a resumed run samples what the uninterrupted
            run would have.
        deploy: build the exported slim multiplication-free structure (for evaluating exported checkpoints).
        exclude_layers: regular expressions (``re.fullmatch`` on names such as ``'backbone.layer0.conv'``) of
            layers the converter leaves dense and multiplicative (their channels keep the target width).
        exclude_types: class names of layers left alone the same way, e.g. ``['Conv2dAdaptivePadding']``
            (mmcv's TF-style padded conv in mmseg's MobileNetV3, which the converter does not support).

    Attributes set by :class:`~.hook.ShiftAddAugHook` each iteration: ``aug_step`` (the training iteration) and
    ``width_aug_enabled`` (width augmentation on; expand augmentation always samples).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        decode_head: Mapping[str, Any],
        neck: Mapping[str, Any] | None = None,
        auxiliary_head: Mapping[str, Any] | list | None = None,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
        data_preprocessor: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        init_cfg: Mapping[str, Any] | list | None = None,
        *,
        convert_cfg: Mapping[str, Any] | None = None,
        alpha: float = 1.0,
        example_input_shape: tuple[int, int, int, int] | list[int] = (2, 3, 64, 64),
        sample_seed: int = 0,
        deploy: bool = False,
        exclude_layers: list[str] | tuple[str, ...] = (),
        exclude_types: list[str] | tuple[str, ...] = (),
    ) -> None:

        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha={alpha!r} must be a finite number >= 0 (weight of the augmented loss; 1.0 in "
                             "ShiftAddAug, 0 trains the target alone)")
        shape = tuple(int(v) for v in example_input_shape)
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError(f"example_input_shape={example_input_shape!r} must be (N, C, H, W) with positive sizes")
        if convert_cfg is not None and not isinstance(convert_cfg, Mapping):
            raise TypeError(f"convert_cfg must be a dict of ConvertConfig fields, got {type(convert_cfg).__name__}")
        # ConvertConfig validates its fields (ValueError/TypeError naming the field) before anything is built.
        self.convert_config = ConvertConfig(**_plain(dict(convert_cfg or {})))
        for name, values in (("exclude_layers", exclude_layers), ("exclude_types", exclude_types)):
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise TypeError(f"{name} must be a list of strings, got {values!r}")
        try:
            self.exclude_layers = [re.compile(p) for p in exclude_layers]
        except re.error as err:
            raise ValueError(f"exclude_layers has an invalid regular expression ({err}); escape dots with "
                             "'\\.'") from None
        self.exclude_types = frozenset(exclude_types)
        dense_kwargs = dict(backbone=backbone, decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
                            train_cfg=train_cfg, test_cfg=test_cfg, pretrained=pretrained)
        self._dense_kwargs = copy.deepcopy(dense_kwargs)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg, **dense_kwargs)
        self.alpha = float(alpha)
        self.example_input_shape = shape
        self.sample_seed = int(sample_seed)
        self.sampler = WidthSampler(self.sample_seed)
        self.deploy = bool(deploy)
        self.aug_step = 0
        self.width_aug_enabled = True
        parts = self._convert(self.parts())
        self._set_parts(parts)

    # ------------------------------------------------------------------------------------------ structure
    def parts(self) -> SegmentorParts:
        """The backbone, neck and heads as one module (sharing this model's sub-modules), carrying the conversion
        plan (layer names relative to it equal those relative to the segmentor)."""

        modules: Any = (self.backbone, getattr(self, "neck", None), self.decode_head,
                        getattr(self, "auxiliary_head", None))
        parts = SegmentorParts(*modules)
        plan = getattr(self, PLAN_ATTR, None)
        if plan is not None:
            setattr(parts, PLAN_ATTR, plan)
        return parts

    def _set_parts(self, parts: nn.Module) -> None:

        # the plan's layer names ('backbone.layer1.0.conv', 'decode_head.conv_seg' ...) are valid relative to the
        # segmentor too, so sampling / sorting / recalibration work on the segmentor (and its DDP wrapper)
        plan = getattr(parts, PLAN_ATTR, None)
        if plan is not None:
            setattr(self, PLAN_ATTR, plan)
        self.backbone = parts.backbone
        if parts.neck is not None:
            self.neck = parts.neck
        self.decode_head = parts.decode_head
        if parts.auxiliary_head is not None:
            self.auxiliary_head = parts.auxiliary_head

    def _convert(self, parts: SegmentorParts) -> nn.Module:
        """Dense parts -> hybrid parts (or, with ``deploy``, the exported target parts)."""

        example = torch.zeros(self.example_input_shape)
        filter_fn = self._filter if (self.exclude_layers or self.exclude_types) else None
        hybrid = convert(parts, self.convert_config, example_input=example, inplace=True, filter_fn=filter_fn)
        return export(hybrid) if self.deploy else hybrid

    def _filter(self, module: nn.Module, name: str) -> bool:
        """``filter_fn`` of the converter: ``False`` keeps a layer dense (``exclude_layers`` / ``exclude_types``)."""
        if type(module).__name__ in self.exclude_types:
            return False
        return not any(p.fullmatch(name) for p in self.exclude_layers)

    def init_weights(self) -> None:
        """Initialise like the dense model (``init_cfg``, ``pretrained``), then widen: a dense copy is initialised
        by mmseg's own ``init_weights`` and converted with the same settings, and its tensors are copied into this
        model's parameters in place (the optimizer keeps its references). Pretrained dense weights therefore land
        in the target slice, as the converter places them. With ``deploy`` the weights come from the exported
        checkpoint and nothing is initialised here."""
        if self.deploy:
            self._is_init = True
            return
        dense = EncoderDecoder(**copy.deepcopy(self._dense_kwargs))
        dense.init_weights()
        fresh = self._convert(SegmentorParts(dense.backbone, getattr(dense, "neck", None), dense.decode_head,
                                             getattr(dense, "auxiliary_head", None)))
        self.parts().load_state_dict(fresh.state_dict(), strict=True)
        self._is_init = True

    # ---------------------------------------------------------------------------------------- training
    def sampling_rng(self, step: int | None = None) -> random.Random:
        """The generator that samples the augmented widths of training step ``step`` (default: ``aug_step``):
        a pure function of ``(sample_seed, step)`` (:class:`shiftaddaug_plugin.augment.WidthSampler`)."""
        return self.sampler.rng(int(self.aug_step if step is None else step))

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """Target losses (``target.*``) plus ``alpha``-weighted losses of one sampled augmented network
        (``aug.*``) on the same batch (docs/algorithms.md §4)."""
        if self.deploy:
            return super().loss(inputs, data_samples)
        dense_loss = super().loss
        target, aug = joint_loss(self, self.aug_step, lambda: dense_loss(inputs, data_samples),
                                 lambda: dense_loss(inputs, data_samples), sampler=self.sampler,
                                 augment=self.alpha > 0, width_aug=self.width_aug_enabled)
        losses = add_prefix(target, "target")
        if aug is not None:
            losses.update(add_prefix(scale_losses(aug, self.alpha), "aug"))
        self.aug_step += 1
        return losses

    # --------------------------------------------------------------------------------------- inference
    def predict(self, inputs: Tensor, data_samples: list | None = None) -> list:
        """Predictions of the target network."""
        with set_mode(self, Mode.TARGET):
            return super().predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: list | None = None) -> Tensor:
        """Raw logits of the target network (``mode='tensor'``)."""
        with set_mode(self, Mode.TARGET):
            return super()._forward(inputs, data_samples)
