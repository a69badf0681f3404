"""Cost rules of convolutions and linear layers: multiplicative, multiplication-free (shift, adder, shift-add) and
hybrid (ShiftAddAug eq. 4). Conventions in :mod:`.rules`; per-MAC prices from
:data:`shiftaddaug_plugin.ops.OP_TABLE`."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..ops import OP_TABLE, Op, op_spec
from .estimate import (
    CostContext,
    LayerEstimate,
    OpCounts,
    _batched,
    _bias_numel,
    _kernel_numel,
    _own_params,
    conv_output_spatial,
    shift_quant_bits,
)

# ------------------------------------------------------------------------------------------------ conv / linear


def _conv_macs(module: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(MACs, output elements) of a (grouped) convolution from the observed shapes."""
    nd = len(module.kernel_size)
    x, y = _batched(x, nd), _batched(y, nd)
    in_ch = int(x.shape[1])
    return int(y.numel()) * (in_ch // module.groups) * _kernel_numel(module), int(y.numel())


def _conv_kind(module: Any, x: torch.Tensor) -> str:
    nd = len(module.kernel_size)
    in_ch = int(_batched(x, nd).shape[1])
    if module.groups > 1 and module.groups == in_ch:
        return "depthwise "
    if module.groups > 1:
        return "grouped "
    return ""


def _dense_params(module: Any, bits: int) -> tuple[int, int]:
    n = sum(int(p.numel()) for p in _own_params(module))
    return n, n * bits


def priced(op: Op, macs: int, bias_adds: int = 0, adder_macs: int = 0) -> OpCounts:
    """Counts of ``macs`` positions of operator ``op`` by the operator table (:class:`shiftaddaug_plugin.ops.OpSpec`),
    plus ``bias_adds`` additions."""
    c = OP_TABLE[op].cost(macs, adder_macs)
    return OpCounts(mults=c.mults, adds=c.adds + bias_adds, shifts=c.shifts, macs=c.macs)


def conv_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Multiplicative convolution: 1 mult + 1 add per MAC, +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    bias_adds = outs if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op=f"{_conv_kind(module, x)}conv",
        counts=priced(Op.MULT, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
    )


def conv_transpose_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Transposed convolution: every input element meets (out/groups)·k weights (1 mult + 1 add each)."""
    nd = len(module.kernel_size)
    x, y = _batched(x, nd), _batched(y, nd)
    macs = int(x.numel()) * (module.out_channels // module.groups) * _kernel_numel(module)
    bias_adds = int(y.numel()) if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op="transposed conv", counts=priced(Op.MULT, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
    )


def _linear_macs(x: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """(MACs, rows, out_features) of a linear layer from the observed shapes."""
    out_f = int(y.shape[-1])
    rows = int(y.numel()) // out_f
    return rows * int(x.shape[-1]) * out_f, rows, out_f


def linear_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Multiplicative linear layer: 1 mult + 1 add per MAC, +1 add per output element for the bias."""
    macs, _, _ = _linear_macs(x, y)
    bias_adds = int(y.numel()) if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op="linear", counts=priced(Op.MULT, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
    )


# ------------------------------------------------------------------------------------------------ MF layers


def _shift_estimate(module: Any, macs: int, bias_adds: int, op: str) -> LayerEstimate:
    w_bits, a_int, a_frac, found = shift_quant_bits(module)
    act_bits = a_int + a_frac
    w = int(module.weight.numel())
    b = _bias_numel(module)
    note = "" if found else ("quantisation attributes not found: DeepShift defaults (5-bit weights, 16+16-bit "
                             "input) assumed")
    return LayerEstimate(
        op=op, counts=priced(Op.SHIFT, macs, bias_adds),
        params=w + b, param_bits=w * w_bits + b * act_bits,  # bias stored at accumulator (fixed-point) width
        weight_bits=(w_bits,), act_bits=act_bits, note=note, mf_layer=True,
    )


def shift_conv_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ShiftConv2d: 1 shift + 1 add per MAC position, +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    return _shift_estimate(module, macs, outs if _bias_numel(module) else 0, f"{_conv_kind(module, x)}shift conv")


def shift_linear_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ShiftLinear: 1 shift + 1 add per MAC position, +1 add per output element for the bias."""
    macs, _, _ = _linear_macs(x, y)
    return _shift_estimate(module, macs, int(y.numel()) if _bias_numel(module) else 0, "shift linear")


def adder_conv_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """AdderConv2d: 2 adds per MAC position (subtract + accumulate), +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    bias_adds = outs if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op=f"{_conv_kind(module, x)}adder conv", counts=priced(Op.ADDER, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
        mf_layer=True,
    )


def shiftadd_conv_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ShiftAddConv2d (ShiftAddNet): its own weight is the shift conv; its ``adder`` sub-module is counted by the
    adder rule when it runs (``counts_children=True``). The shift conv's output shape is not observed, so it is
    computed from the conv geometry."""
    nd = len(module.kernel_size)
    xb = _batched(x, nd)
    out_spatial = conv_output_spatial(module, tuple(int(s) for s in xb.shape[2:]))
    outs = int(xb.shape[0]) * module.out_channels * int(math.prod(out_spatial))
    macs = outs * (int(xb.shape[1]) // module.groups) * _kernel_numel(module)
    est = _shift_estimate(module, macs, outs if _bias_numel(module) else 0, f"{_conv_kind(module, x)}shift conv")
    est.op = "shift-add: shift part"
    est.note = (est.note + "; " if est.note else "") + "adder part counted in its own row"
    return est


# ------------------------------------------------------------------------------------------------ hybrid layers


def _mode_value(module: Any) -> str:
    mode = getattr(module, "mode", None)
    return str(getattr(mode, "value", mode))


def _hybrid_estimate(
    module: Any, op_name: str, t_macs: int, a_macs: int, merge_adds: int, bias_adds: int,
    t_params: int, a_params: int, bias_params: int, ctx: CostContext, *, adder_macs: int = 0, adder_params: int = 0,
) -> LayerEstimate:
    """Assemble a hybrid layer's cost: target part by its operator, augmented part multiplicative (eq. 4)."""
    spec = op_spec(getattr(module, "op", Op.SHIFT), where=f"hybrid layer {type(module).__name__}")
    op = spec.op.value
    mf = bool(getattr(module, "mf_enabled", True)) and spec.multiplication_free
    p = ctx.precision_bits
    weight_bits, act_bits, t_bits = {p}, p, p
    pricing = spec if mf else OP_TABLE[Op.MULT]  # MF disabled: one plain conv / linear (adder weight unused)
    counts = priced(pricing.op, t_macs, adder_macs=adder_macs)
    if not mf:
        adder_params = 0
    elif spec.has_shift:  # shift, or shift-add = shift conv then adder conv
        w_bits, a_int, a_frac, _ = shift_quant_bits(module)
        t_bits, act_bits = w_bits, max(a_int + a_frac, p if a_macs else 0)
        weight_bits = {w_bits} | ({p} if a_params or adder_params else set())
    counts = counts + OpCounts(mults=a_macs, adds=a_macs + merge_adds + bias_adds, macs=a_macs)
    param_bits = t_params * t_bits + (adder_params + a_params) * p + bias_params * max(p, act_bits)
    kind = op if mf or op == "mult" else f"{op}, MF disabled -> mult"
    note = f"mode={_mode_value(module)}; target {t_macs + adder_macs} MAC pos ({kind}), augmented {a_macs} MACs (mult)"
    if getattr(module, "remap", None) is not None:
        note += "; weight remap (eq. 5) acts on weights only: 0 ops at inference"
    return LayerEstimate(
        op=f"{op_name} ({kind})", counts=counts, params=t_params + adder_params + a_params + bias_params,
        param_bits=param_bits, weight_bits=tuple(sorted(weight_bits)), act_bits=act_bits, note=note, mf_layer=mf,
    )


def hybrid_conv_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """HybridConv2d (ShiftAddAug eq. 4) from the observed widths C (input) and O (output):

    * depthwise: ``Y = cat(MF(X_t), M(X_a))`` -> MF on O_t channels, mult on O - O_t channels.
    * dense: ``Y_t = MF(X_t) + M(X_a)``, ``Y_a = M(X)`` -> MF O_t·I_t·k, mult O_t·(C-I_t)·k + (O-O_t)·C·k MACs per
      position, +1 add per target output element to merge the two partial sums when X_a is present.
    In target mode C = I_t and O = O_t, so the layer costs exactly like its exported MF target."""
    xb, yb = _batched(x, 2), _batched(y, 2)
    c_in, c_out = int(xb.shape[1]), int(yb.shape[1])
    positions = int(yb.numel()) // c_out
    k = _kernel_numel(module)
    t_out = min(int(module.target_out_channels), c_out)
    bias_adds = int(yb.numel()) if _bias_numel(module) else 0
    bias_params = c_out if _bias_numel(module) else 0
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    # shift-add target: adder conv O_t -> O_t (groups 1, or O_t when depthwise), stride 1, on the output positions
    adder_w = getattr(module, "adder_weight", None)
    adder_params = int(adder_w.numel()) if isinstance(adder_w, torch.Tensor) else 0
    adder_macs = t_out * (t_out if not depthwise else 1) * k * positions if adder_params else 0
    if depthwise:
        t_macs, a_macs, merge = t_out * k * positions, (c_out - t_out) * k * positions, 0
        t_params, a_params = t_out * k, (c_out - t_out) * k
        name = "hybrid depthwise conv"
    elif module.groups == 1:
        t_in = min(int(module.target_in_channels), c_in)
        t_macs = t_out * t_in * k * positions
        a_macs = (t_out * (c_in - t_in) + (c_out - t_out) * c_in) * k * positions
        merge = t_out * positions if c_in > t_in else 0
        t_params = t_out * t_in * k
        a_params = (t_out * (c_in - t_in) + (c_out - t_out) * c_in) * k
        name = "hybrid conv"
    else:
        raise ValueError(
            f"HybridConv2d with groups={module.groups} (in={module.in_channels}, out={module.out_channels}) is "
            "neither dense (groups=1) nor depthwise; the cost model knows only those two (docs/algorithms.md §3)"
        )
    return _hybrid_estimate(module, name, t_macs, a_macs, merge, bias_adds, t_params, a_params, bias_params, ctx,
                            adder_macs=adder_macs, adder_params=adder_params)


def hybrid_linear_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """HybridLinear: ``Y = ShiftLinear(X_t) + Linear(X_a)`` (outputs not widened); the bias belongs to the MF part."""
    c_in = int(x.shape[-1])
    _, rows, out_f = _linear_macs(x, y)
    t_in = min(int(module.target_in_features), c_in)
    merge = rows * out_f if c_in > t_in else 0
    bias_adds = int(y.numel()) if _bias_numel(module) else 0
    return _hybrid_estimate(
        module, "hybrid linear", rows * out_f * t_in, rows * out_f * (c_in - t_in), merge, bias_adds,
        out_f * t_in, out_f * (c_in - t_in), out_f if _bias_numel(module) else 0, ctx,
    )
