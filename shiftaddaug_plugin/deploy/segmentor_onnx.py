"""ONNX export of an exported MMSegmentation segmentor (docs/deploy.md).

:class:`SegmentorLogits` is the part of an mmseg ``EncoderDecoder``'s whole-image inference that is a network:
backbone, neck, decode head, then the head's bilinear resize of the logits to the input size (what
``decode_head.predict`` does when the image is not padded). Its output is ``(N, classes, H, W)``; ``argmax(1)`` is
the label map mmseg's ``predict`` returns for an input of that size. Normalisation (the data preprocessor's
mean / std, channel order) stays outside the graph and is written into the metadata, as for classifiers. Attribute
names follow the segmentor's, so layer names (``backbone.*``, ``decode_head.*``) match the cost model's and the
exported checkpoint's. The auxiliary head, a training-only loss, is left out.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..protocol import hybrid_modules
from .onnx_export import export_onnx

__all__ = ["SegmentorLogits", "export_segmentor_onnx"]


class SegmentorLogits(nn.Module):
    """Backbone -> neck -> decode head -> bilinear resize to the input size (module docstring)."""

    backbone: nn.Module
    neck: nn.Module | None
    decode_head: nn.Module

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        backbone, neck, head = (getattr(segmentor, part, None) for part in ("backbone", "neck", "decode_head"))
        if not isinstance(backbone, nn.Module) or not isinstance(head, nn.Module):
            raise TypeError(f"{type(segmentor).__name__} has no backbone / decode_head: pass an mmseg EncoderDecoder "
                            "(the deploy model of tools/export_mmseg.py)")
        if any(True for _ in hybrid_modules(segmentor)):
            raise ValueError("the segmentor is the hybrid training model; build it with model.deploy=True and load "
                             "the exported checkpoint (tools/export_mmseg.py writes it)")
        self.backbone = backbone
        self.neck = neck if isinstance(neck, nn.Module) and getattr(segmentor, "with_neck", False) else None
        self.decode_head = head
        self.align_corners = bool(getattr(segmentor.decode_head, "align_corners", False))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        logits = self.decode_head(feats)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=self.align_corners)


def export_segmentor_onnx(segmentor: nn.Module, path: str | os.PathLike[str], example_input: Tensor, *,
                          opset: int = 17, metadata: dict[str, Any] | None = None) -> tuple[Path, SegmentorLogits]:
    """Write ``segmentor`` (a deploy-mode mmseg segmentor holding an exported MF target) as ONNX; returns the path
    and the :class:`SegmentorLogits` network that was exported (the PyTorch reference of the file)."""
    net = SegmentorLogits(segmentor).eval()
    preprocessor = getattr(segmentor, "data_preprocessor", None)
    source: dict[str, Any] = {"task": "semantic segmentation",
                              "output": "logits (N, classes, H, W) at the input size; argmax(1) is the label map",
                              "input_size": list(example_input.shape[1:])}
    for key in ("mean", "std"):
        value = getattr(preprocessor, key, None)
        if isinstance(value, Tensor):
            source[key] = [float(v) for v in value.flatten()]
    if preprocessor is not None and hasattr(preprocessor, "_channel_conversion"):
        source["bgr_to_rgb"] = bool(preprocessor._channel_conversion)
    classes = (getattr(segmentor, "dataset_meta", None) or {}).get("classes")
    if classes is not None:
        source["classes"] = list(classes)
    out = export_onnx(net, path, example_input, opset=opset,
                      metadata={"shiftaddaug.source": source, **(metadata or {})})
    return out, net
