"""ONNX export of an exported multiplication-free target (docs/deploy.md).

:func:`export_onnx` takes the slim network that :func:`shiftaddaug_plugin.convert.export` produced (a timm model or
any ``nn.Module`` built from our MF layers), replaces every MF layer by its standard-op twin
(:mod:`.onnx_layers`), traces it with ``torch.onnx.export`` (batch dimension dynamic), attaches the functions that
define the adder nodes (:mod:`.onnx_functions`) and writes the file atomically with metadata a hardware tool chain
can read:

* ``shiftaddaug.layers``: ``{layer name: operator}`` of every conv / linear layer (``shift``, ``adder``,
  ``shiftadd``, ``mult``);
* ``shiftaddaug.quantisation``: per shift layer its weight format (1 sign bit + shift bits, exponent range), its
  fixed-point input format (integer / fraction bits, rounding) and ``weight_initializer``, the initializer that
  holds its weights ``s * 2^p`` exactly (sign ``s = sign(w)``, exponent ``p = log2 |w|``, ``w = 0`` a pruned weight);
* ``shiftaddaug.cost``: the cost model's totals of the network (multiplications, shifts, additions, energy).

Batch norms stay separate ``BatchNormalization`` nodes (folding one into a shift conv would destroy its
power-of-two weights); a deployment folds them into the following fixed-point requantisation.
"""
from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write
from ..cost import count_ops
from ..layers.adder import AdderConv2d
from ..layers.shift import ShiftConv2d, ShiftLinear
from ..layers.shiftadd import ShiftAddConv2d
from ..protocol import hybrid_modules
from .onnx_functions import attach_adder_functions
from .onnx_layers import ADDER_DOMAIN, onnx_twin

__all__ = ["export_onnx", "onnx_ready", "layer_operators"]

_MF_LAYERS = (AdderConv2d, ShiftConv2d, ShiftLinear, ShiftAddConv2d)
#: Opsets this export supports: unfold (the adder patches) exists from 11; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 11, 20


def layer_operators(model: nn.Module) -> dict[str, str]:
    """``{name: operator}`` of every conv / linear layer of an exported target."""
    ops: dict[str, str] = {}
    for name, m in model.named_modules():
        if type(m) is ShiftAddConv2d:
            ops[name] = "shiftadd"
        elif type(m) in (ShiftConv2d, ShiftLinear):
            ops[name] = "shift"
        elif type(m) is AdderConv2d and not name.endswith(".adder"):
            ops[name] = "adder"
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and not name.endswith(".adder"):
            ops[name] = "mult"
    return ops


def _quantisation(model: nn.Module) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        cfg = getattr(m, "quant_config", None)
        if type(m) in (ShiftConv2d, ShiftLinear, ShiftAddConv2d) and cfg is not None:
            out[name] = {"weight_bits": cfg.weight_bits, "exponent_range": [-(2 ** (cfg.weight_bits - 1) - 1), 0],
                         "act_int_bits": cfg.act_int_bits, "act_frac_bits": cfg.act_frac_bits,
                         "act_rounding": cfg.act_rounding, "quantize_input": cfg.quantize_input}
    return out


def onnx_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every MF layer replaced by its standard-op twin, in eval mode. ``ValueError`` for a
    hybrid (training) model: export it with ``shiftaddaug_plugin.convert.export`` first."""
    hybrid = [name for name, _ in hybrid_modules(model)]
    if hybrid:
        raise ValueError(f"the model still has hybrid training layers ({', '.join(hybrid[:3])}...); export the "
                         "multiplication-free target first: slim = shiftaddaug_plugin.convert.export(model), or load "
                         "exported_target.pth written by shiftaddaug-train")
    ready = copy.deepcopy(model).eval()
    twins: dict[int, nn.Module] = {}  # a layer used twice stays one (shared) twin
    for parent_name, parent in list(ready.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in twins:
                twin = onnx_twin(child)
                if twin is None and isinstance(child, _MF_LAYERS):
                    path = f"{parent_name}.{child_name}" if parent_name else child_name
                    base = next(c.__name__ for c in _MF_LAYERS if isinstance(child, c))
                    raise ValueError(f"layer {path!r} is a {type(child).__name__}, a subclass of {base} with no ONNX "
                                     "twin: export it as the base class, or add its type to "
                                     "deploy.onnx_layers.onnx_twin")
                if twin is not None:
                    twins[id(child)] = twin
            if id(child) in twins:
                setattr(parent, child_name, twins[id(child)])
    return ready


def export_onnx(model: nn.Module, path: str | os.PathLike[str], example_input: torch.Tensor, *, opset: int = 17,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an exported MF target) as an ONNX file at ``path`` (module docstring); returns the path.

    ``example_input``: one input batch of the right shape (its batch size does not matter: the batch dimension is
    exported dynamic). ``metadata``: extra ``{key: JSON-able value}`` entries."""
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset={opset}: the adder patch extraction needs ONNX opset >= {MIN_OPSET} and torch's "
                         f"TorchScript exporter writes at most {MAX_OPSET}; choose one in [{MIN_OPSET}, {MAX_OPSET}] "
                         "(default 17)")
    ready = onnx_ready(model)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(ready, (example_input,), buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          training=torch.onnx.TrainingMode.EVAL, custom_opsets={ADDER_DOMAIN: 1},
                          do_constant_folding=False)  # folding would fuse BN into shift convs
    proto = attach_adder_functions(onnx.load_from_string(buffer.getvalue()), opset)
    report = count_ops(model, tuple(example_input.shape[1:]))
    initializers = {init.name for init in proto.graph.initializer}
    quantisation = _quantisation(model)
    for name, entry in quantisation.items():  # where a tool chain reads the signs and exponents of each layer
        found = [n for n in (f"{name}.weight", f"{name}.0.weight") if n in initializers]
        if found:
            entry["weight_initializer"] = found[0]
    props = {
        "shiftaddaug.layers": layer_operators(model),
        "shiftaddaug.quantisation": quantisation,
        "shiftaddaug.cost": {**report.totals(), "multiplicative_layers": report.multiplicative_layers},
        **(metadata or {}),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, default=str)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    def write(handle: Any) -> None:
        handle.write(data)

    return atomic_write(path, write, text=False)
