"""The ONNX functions that define ``shiftaddaug.AdderConv2d`` in standard ops (docs/deploy.md).

Tracing writes every adder conv as one node of the custom domain ``shiftaddaug`` (op ``AdderConv2d``, inputs
``X, W[, B]``, attributes ``kernel_shape``, ``strides``, ``pads``, ``dilations``, ``group`` as ``Conv``'s).
:func:`attach_adder_functions` adds one model-local function per distinct configuration (ONNX IR 10 function
overloads, named by :attr:`~.onnx_layers.AdderGeometry2d.overload`), whose body is
:func:`~.onnx_layers.adder_conv_standard_ops` traced with a dynamic batch and image size. ONNX Runtime inlines them,
so it runs the model without a custom kernel; a tool chain with an adder kernel maps the node instead.
"""
from __future__ import annotations

import functools
import io
from typing import Any

import torch
from torch import Tensor, nn

from .onnx_layers import ADDER_DOMAIN, ADDER_OP, AdderGeometry2d, adder_conv_standard_ops

__all__ = ["attach_adder_functions", "adder_function", "FUNCTION_ATTRIBUTES", "MIN_IR_VERSION"]

#: Attributes the function declares (its body is specialised to them; they are informative for tool chains).
FUNCTION_ATTRIBUTES = ("kernel_shape", "strides", "pads", "dilations", "group")
#: Function overloads need ONNX IR version 10.
MIN_IR_VERSION = 10


class _Body(nn.Module):
    def __init__(self, geo: AdderGeometry2d) -> None:
        super().__init__()
        self.geo = geo

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return adder_conv_standard_ops(x, weight, bias, self.geo)


def _geometry(attrs: dict[str, Any], weight_shape: list[int], bias: bool) -> AdderGeometry2d:
    def pair(v: Any) -> tuple[int, int]:
        return int(v[0]), int(v[1])

    return AdderGeometry2d(kernel=pair(attrs["kernel_shape"]), stride=pair(attrs["strides"]),
                           padding=pair(attrs["pads"]), dilation=pair(attrs["dilations"]),
                           groups=int(attrs["group"]), out_channels=int(weight_shape[0]), bias=bias)


def adder_function(geo: AdderGeometry2d, in_channels: int, opset: int) -> Any:
    """The ``onnx.FunctionProto`` of one adder configuration (``in_channels`` only sizes the trace example)."""
    import onnx

    function = onnx.FunctionProto()
    function.ParseFromString(_adder_function_bytes(geo, in_channels, opset))
    return function


@functools.lru_cache(maxsize=256)
def _adder_function_bytes(geo: AdderGeometry2d, in_channels: int, opset: int) -> bytes:
    """:func:`adder_function`, serialised and cached per process (tracing a body takes a fraction of a second, and a
    network has tens of configurations)."""
    import onnx
    from onnx import helper, numpy_helper

    kh, kw = geo.kernel
    x = torch.zeros(1, in_channels, kh * geo.dilation[0] + geo.stride[0], kw * geo.dilation[1] + geo.stride[1])
    weight = torch.zeros(geo.out_channels, in_channels // geo.groups, kh, kw)
    args: tuple[Tensor, ...] = (x, weight) + ((torch.zeros(geo.out_channels),) if geo.bias else ())
    names = ["X", "W", "B"][:len(args)]
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(_Body(geo), args, buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                          input_names=names, output_names=["Y"], do_constant_folding=False,
                          dynamic_axes={"X": {0: "N", 2: "H", 3: "W"}, "Y": {0: "N", 2: "Ho", 3: "Wo"}})
    graph = onnx.load_from_string(buffer.getvalue()).graph
    constants = [helper.make_node("Constant", [], [init.name], value=numpy_helper.from_array(
        numpy_helper.to_array(init), init.name)) for init in graph.initializer]
    nodes = constants + list(graph.node)
    for node in nodes:
        node.name = (node.name or node.op_type).lstrip("/")  # the audit prefixes the call site
    (ph, pw), (sh, sw), (dh, dw) = geo.padding, geo.stride, geo.dilation
    function = helper.make_function(
        ADDER_DOMAIN, ADDER_OP, names, ["Y"], nodes, [helper.make_opsetid("", opset)],
        attributes=list(FUNCTION_ATTRIBUTES),
        doc_string=(f"AdderNet conv Y = -sum_(c,taps) |X_patch - W| (+B): kernel {kh}x{kw}, stride {sh}x{sw}, "
                    f"zero padding {ph}x{pw}, dilation {dh}x{dw}, groups {geo.groups}, {geo.out_channels} outputs"))
    function.overload = geo.overload
    return function.SerializeToString()


def attach_adder_functions(proto: Any, opset: int) -> Any:
    """Give every ``shiftaddaug.AdderConv2d`` node of ``proto`` (an ``onnx.ModelProto``, changed in place) its
    function overload (from its attributes and weight shape) and the model the functions; returns ``proto``."""
    from onnx import helper

    adders = [n for n in proto.graph.node if n.domain == ADDER_DOMAIN and n.op_type == ADDER_OP]
    if not adders:
        return proto
    shapes = {init.name: list(init.dims) for init in proto.graph.initializer}
    functions: dict[str, Any] = {}
    for node in adders:
        w_shape = shapes.get(node.input[1])
        if not w_shape or len(w_shape) != 4:
            raise ValueError(f"{node.name}: the weight of this adder node is not a 4-d initializer; export the "
                             "weights as constants (deploy.onnx_export.onnx_ready)")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        geo = _geometry(attrs, w_shape, bias=len(node.input) == 3)
        node.overload = geo.overload
        if geo.overload not in functions:
            functions[geo.overload] = adder_function(geo, int(w_shape[1]) * geo.groups, opset)
    proto.functions.extend(functions.values())
    proto.ir_version = max(proto.ir_version, MIN_IR_VERSION)
    if not any(o.domain == ADDER_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(ADDER_DOMAIN, 1))
    return proto
