"""Deploying the exported multiplication-free target outside PyTorch (docs/deploy.md).

* :mod:`.onnx_layers` — standard-op twins of the MF layers: a shift layer becomes a ``Conv`` / ``Gemm`` whose weights
  are exactly its power-of-two values behind the fixed-point input quantisation; an adder layer becomes patch
  extraction, ``Sub``, ``Abs``, ``ReduceSum`` and ``Neg``;
* :mod:`.onnx_export` — :func:`export_onnx`: exported target -> ONNX model that ONNX Runtime runs, with metadata;
* :mod:`.onnx_audit` — :func:`audit_onnx`: every multiplication-capable node is a power-of-two shift or a listed
  multiplicative layer;
* :mod:`.cli` — ``shiftaddaug-export exported_target.pth --onnx out.onnx``.

``onnx`` and ``onnxruntime`` are imported only inside these modules' functions that need them.
"""
from __future__ import annotations

__all__ = ["onnx_layers", "onnx_export", "onnx_audit", "cli"]
