"""Check an exported ONNX file against the PyTorch model it came from (docs/deploy.md): ONNX Runtime output vs
PyTorch, prediction agreement, and the no-hidden-multiplication audit against the cost model."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..cost import CostReport, count_ops
from ..functional.adder import eager_adders
from .onnx_audit import OnnxAudit, audit_onnx

__all__ = ["OnnxCheck", "check_onnx", "run_onnx"]


def run_onnx(path: str | os.PathLike[str], x: torch.Tensor) -> np.ndarray:
    """The first output of the ONNX model at ``path`` on ``x`` (ONNX Runtime, CPU provider)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@dataclass
class OnnxCheck:
    """The result of :func:`check_onnx`."""

    max_relative_difference: float  #: max |ORT - PyTorch| / max |PyTorch|
    agreement: float  #: fraction of equal argmax over dim 1 (top-1 of a classifier, label of each pixel)
    audit: OnnxAudit
    report: CostReport

    def format(self, what: str = "top-1") -> str:
        mults = self.report.multiplicative_layers
        return "\n".join([
            f"ONNX Runtime vs PyTorch: max relative difference {self.max_relative_difference:.2e}, {what} agreement "
            f"{self.agreement:.0%}",
            self.audit.format(),
            f"multiplicative layers (cost model): {mults or 'none'}; no hidden multiplication"])


def check_onnx(model: nn.Module, path: str | os.PathLike[str], x: torch.Tensor) -> OnnxCheck:
    """Run ``path`` in ONNX Runtime and ``model`` in PyTorch on ``x``; audit the graph (``ValueError`` on a hidden
    multiplication). Adder layers run eagerly in PyTorch (the reference maths, no compilation)."""
    got = run_onnx(path, x)
    with torch.no_grad(), eager_adders():
        ref = model.eval()(x).numpy()
    if got.shape != ref.shape:
        raise ValueError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    rel = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    report = count_ops(model, tuple(x.shape[1:]))
    audit = audit_onnx(path, allowed=report.multiplicative_layers)
    return OnnxCheck(rel, agree, audit, report)
