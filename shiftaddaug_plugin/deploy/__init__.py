"""Deploying the exported multiplication-free target outside PyTorch (docs/deploy.md).

* :mod:`.onnx_layers` — standard-op twins of the MF layers: a shift layer becomes a ``Conv`` / ``Gemm`` whose weights
  are exactly its power-of-two values behind the fixed-point input quantisation; an adder layer becomes one
  ``shiftaddaug.AdderConv2d`` node;
* :mod:`.onnx_functions` — the ONNX functions that define that node (patch extraction, ``Sub``, ``Abs``,
  ``ReduceSum``, ``Neg``), so ONNX Runtime runs it without a custom kernel;
* :mod:`.onnx_export` — :func:`export_onnx`: exported target -> ONNX model that ONNX Runtime runs, with metadata;
* :mod:`.segmentor_onnx` — :func:`export_segmentor_onnx`: an exported mmseg segmentor -> ONNX (logits at input size);
* :mod:`.verify` — :func:`check_onnx`: ONNX Runtime vs PyTorch and the audit;
* :mod:`.onnx_audit` — :func:`audit_onnx`: every multiplication-capable node is a power-of-two shift or a listed
  multiplicative layer;
* :mod:`.cli` — ``shiftaddaug-export exported_target.pth --onnx out.onnx``.

``onnx`` and ``onnxruntime`` are imported only inside these modules' functions that need them.
"""
from __future__ import annotations

__all__ = ["onnx_layers", "onnx_functions", "onnx_export", "onnx_audit", "segmentor_onnx", "verify", "cli"]
