"""Proof of no hidden multiplication in an exported ONNX graph (docs/deploy.md).

Every node that can multiply data (``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``, ``Mul``, ``Div``,
``BatchNormalization``) is classified:

* **index** — all its inputs are integers (shape and index arithmetic of the patch extraction): not a data product;
* **shift** — a ``Conv`` / ``Gemm`` / ``MatMul`` whose weight constant holds only ``0`` and ``±2^k``, or a ``Mul`` /
  ``Div`` by a scalar constant ``2^k`` (fixed-point scaling): a shift in hardware;
* **bn** — a ``BatchNormalization``: folded into the following requantisation at deployment (the cost model's
  ``bn='folded'`` convention);
* **resize** — a ``Resize`` that interpolates (``linear`` / ``cubic``; ``nearest`` copies): fixed interpolation
  weights, e.g. the segmentor's final upsampling of the logits, which the cost model does not count (for a
  power-of-two scale factor the bilinear weights are multiples of ``2^-k``: shifts and additions);
* **mult** — anything else: a real multiplication. It must belong to a layer the cost model lists as multiplicative
  (stem, classifier, pooling scale); :func:`audit_onnx` with ``allowed`` raises otherwise.

Model-local functions (the ``shiftaddaug.AdderConv2d`` definitions) are inlined first, their nodes named after the
call site (``/blocks.1/.../conv_pw/AdderConv2d/Sub``), so a multiplication hidden in a function body is found and
named too; :attr:`OnnxAudit.functions` counts the custom-domain calls.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

__all__ = ["OnnxAudit", "audit_onnx", "is_power_of_two_tensor"]

_MULTIPLYING = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Mul", "Div", "BatchNormalization", "Resize"})
_INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})  # onnx.TensorProto (U)INT8/16/32/64


def is_power_of_two_tensor(values: np.ndarray) -> bool:
    """All entries are ``0`` or ``±2^k`` (``k`` any integer), exactly."""
    v = np.abs(values.astype(np.float64).ravel())
    v = v[v != 0]
    if v.size == 0:
        return True
    mantissa, _ = np.frexp(v)
    return bool(np.all(mantissa == 0.5))


@dataclass
class OnnxAudit:
    """Classification of every multiplication-capable node (module docstring)."""

    nodes: list[tuple[str, str, str]] = field(default_factory=list)  #: (node name, op type, kind)
    functions: dict[str, int] = field(default_factory=dict)  #: calls per custom op ``domain.op``

    def of_kind(self, kind: str) -> list[tuple[str, str, str]]:
        return [n for n in self.nodes if n[2] == kind]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, kind in self.nodes:
            out[kind] = out.get(kind, 0) + 1
        return out

    def format(self) -> str:
        lines = [f"{len(self.nodes)} multiplication-capable nodes: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items()))]
        lines += [f"  custom op {op}: {n} nodes (ONNX functions of standard ops)" for op, n in
                  sorted(self.functions.items())]
        lines += [f"  mult  {op:<10} {name}" for name, op, _ in self.of_kind("mult")]
        return "\n".join(lines)


def _scalar(values: np.ndarray | None) -> float | None:
    if values is None or values.size != 1:
        return None
    return float(values.ravel()[0])


def _function_calls(proto: Any) -> dict[str, int]:
    local = {(f.domain, f.name) for f in proto.functions}
    out: dict[str, int] = {}
    for node in proto.graph.node:
        if (node.domain, node.op_type) in local:
            key = f"{node.domain}.{node.op_type}"
            out[key] = out.get(key, 0) + 1
    return out


def _inline_named(proto: Any) -> Any:
    """``proto`` with its local functions inlined; each inlined node is named ``<call site>/<body node>``."""
    import onnx
    from onnx import inliner

    if not proto.functions:
        return proto
    proto = copy.deepcopy(proto)
    bodies = {(f.domain, f.name, f.overload): f for f in proto.functions}
    graph_nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in graph_nodes:  # one private function per call site, so body names can carry the caller's name
        key = (node.domain, node.op_type, node.overload)
        if key in bodies:
            private = onnx.FunctionProto()
            private.CopyFrom(bodies[key])
            private.overload = f"{node.overload}@{len(proto.functions)}"
            for inner in private.node:
                inner.name = f"{node.name}/{inner.name}"
            proto.functions.append(private)
            node.overload = private.overload
        proto.graph.node.append(node)
    return inliner.inline_local_functions(proto)


def audit_onnx(model: Any, allowed: Iterable[str] | None = None) -> OnnxAudit:
    """Classify the multiplication-capable nodes of ``model`` (an ``onnx.ModelProto`` or a path). With ``allowed``
    (layer names the cost model reports as multiplicative, e.g. ``report.multiplicative_layers``), raise
    ``ValueError`` naming any ``mult`` node that belongs to none of them."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    calls = _function_calls(proto)
    proto = shape_inference.infer_shapes(_inline_named(proto))
    graph = proto.graph
    consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    types: dict[str, int] = {}
    for info in (*graph.value_info, *graph.input, *graph.output):
        types[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    audit = OnnxAudit(functions=calls)
    for node in graph.node:
        if node.op_type not in _MULTIPLYING:
            continue
        inputs = [i for i in node.input if i]
        if inputs and all(types.get(i) in _INTEGER_TYPES for i in inputs):
            kind = "index"
        elif node.op_type == "BatchNormalization":
            kind = "bn"
        elif node.op_type == "Resize":
            modes = [a.s.decode() for a in node.attribute if a.name == "mode"]
            if (modes[0] if modes else "nearest") == "nearest":  # nearest (the ONNX default) copies
                continue
            kind = "resize"
        elif node.op_type in ("Mul", "Div"):
            scalars = [_scalar(consts.get(i)) for i in inputs]
            power = [s for s in scalars if s is not None and s != 0 and math.frexp(abs(s))[0] == 0.5]
            kind = "shift" if power else "mult"
        else:
            weight = consts.get(inputs[1]) if len(inputs) > 1 else None
            kind = "shift" if weight is not None and is_power_of_two_tensor(weight) else "mult"
        audit.nodes.append((node.name, node.op_type, kind))
    if allowed is not None:
        names = [a.replace(".", "/") for a in allowed]
        hidden = [n for n in audit.of_kind("mult") if not any(f"/{a}/" in f"/{n[0]}/" or n[0].startswith(f"/{a}/")
                                                             for a in names)]
        if hidden:
            raise ValueError(f"hidden multiplication in the ONNX graph: {[f'{op} {name}' for name, op, _ in hidden]} "
                             f"belong to no layer the cost model lists as multiplicative ({list(allowed)})")
    return audit
