"""Operation counts per layer type (docs/algorithms.md §8), looked up by **exact** type.

A rule sees one call of a module: its actual input and output tensors (channel counts, spatial sizes and batch come
from them, so sliced hybrid layers and dynamic padding are counted as run). Conventions:

* multiplicative conv / linear: 1 mult + 1 add per multiply-accumulate (MAC); a bias adds 1 add per output element.
* shift (DeepShift-Q): 1 shift + 1 add per MAC position (the sign is a conditional negation, not counted).
* adder (AdderNet): 2 adds per MAC position (subtraction + accumulation; ``|.|`` is a sign flip, not counted).
* shift-add composite: its shift layer plus its adder layer, each as above (the hybrid ``'shiftadd'`` target's
  adder is O_t -> O_t, same kernel and groups, stride 1, on the output positions).
* hybrid layers (ShiftAddAug eq. 4): target slice costs as its MF operator (or multiplicative when
  ``mf_enabled`` is False / ``op == 'mult'``); augmented channels cost as a multiplicative conv; in augmented mode
  ``Y_t = MF(X_t) + M(X_a)`` adds one add per target output element to merge the two partial sums.
* BatchNorm: ``bn='folded'`` (default) 0 ops (folded into the preceding layer's weights/bias at deployment);
  ``bn='unfolded'`` 1 mult + 1 add per element.
* LayerNorm / GroupNorm / InstanceNorm (statistics at run time, not foldable): 3 adds + 2 mults per element
  (mean, centring, square, variance, scale), plus 1 mult + 1 add per element when affine.
* max pooling: k-1 comparisons per output element, counted as adds (a comparison is a subtraction).
* average pooling: k-1 adds per output element + one 1/k scaling, counted as a shift when k is a power of two and
  as a mult otherwise. Adaptive pooling uses the exact bins.
* activations (ReLU family, sigmoid, SiLU, GELU, ...): 0 ops (comparison or look-up table), listed with shapes.
* upsampling: nearest 0 ops; (bi/tri)linear/bicubic a weighted sum of 2/4/8/16 neighbours per output element.
* timm EfficientNet-family blocks: +1 add per output element for the residual; timm ``SqueezeExcite``: global mean
  (as average pooling) + 1 mult per element for the gating product. Other code that runs in a container's
  ``forward`` without a module (functional residuals, attention matmuls) is not seen by module hooks.

A rule returns a ``LayerEstimate`` (or ``None`` when the call costs nothing worth a row). ``counts_children``
says whether the module's sub-modules are counted by their own rules (containers, BN+act) or are part of the
module's own formula (leaf ops, hybrid layers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from ..ops import OP_TABLE, Op, op_spec

# ------------------------------------------------------------------------------------------------ data types


@dataclass
class OpCounts:
    """Operation counts of one layer (or a total)."""

    mults: int = 0
    adds: int = 0
    shifts: int = 0
    macs: int = 0  #: MAC positions of conv/linear-like layers whatever their operator (for cross-checks)

    def __add__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(
            self.mults + other.mults, self.adds + other.adds, self.shifts + other.shifts, self.macs + other.macs
        )


@dataclass
class LayerEstimate:
    """What a rule reports for one call of a module."""

    op: str  #: short description of the operator, e.g. 'conv', 'shift conv', 'hybrid conv (shift)'
    counts: OpCounts
    params: int = 0  #: parameters the call actually used (target slice for hybrid layers)
    param_bits: int = 0  #: sum over those parameters of their storage bit width
    weight_bits: tuple[int, ...] = ()  #: distinct weight bit widths used
    act_bits: int = 32  #: activation bit width (input of the layer)
    note: str = ""
    mf_layer: bool = False  #: an MF operator (shift / adder / shift-add, or a hybrid layer's MF target part)
    in_place: bool = False  #: element-wise and fusable in place (BN, activations): no extra activation memory


@dataclass(frozen=True)
class CostContext:
    """Settings shared by all rules of one ``count_ops`` call."""

    precision_bits: int = 32  #: bit width of non-shift weights and activations
    fold_bn: bool = True
    prev_mf: bool = False  #: the previously counted layer was an MF operator (BN-folding note)


Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor, CostContext], "LayerEstimate | None"]


@dataclass(frozen=True)
class CostRule:
    """A cost formula for one module type; ``counts_children``: sub-modules are counted by their own rules."""

    fn: Rule
    counts_children: bool = False


#: Modules that are pure data movement / no-ops at inference (no row, no memory).
NOOP = "noop"

# ------------------------------------------------------------------------------------------------ helpers


def type_key(cls: type) -> str:
    """Table key of a class: ``module.QualName`` (exact type, no import of the defining package needed)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _own_params(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters(recurse=False)]


def _bias_numel(module: nn.Module) -> int:
    bias = getattr(module, "bias", None)
    return int(bias.numel()) if isinstance(bias, torch.Tensor) else 0


def _kernel_numel(module: nn.Module) -> int:
    return int(math.prod(module.kernel_size))


def _batched(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Add the batch dimension of an unbatched conv/pool input (``C, *spatial``)."""
    return x.unsqueeze(0) if x.dim() == spatial_dims + 1 else x


def _to_tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _scale_op(counts: OpCounts, divisor: int, n_outputs: int) -> None:
    """Add ``n_outputs`` multiplications by 1/divisor: shifts when divisor is a power of two, mults otherwise."""
    if divisor == 1:
        return
    if _is_power_of_two(divisor):
        counts.shifts += n_outputs
    else:
        counts.mults += n_outputs


def shift_quant_bits(module: nn.Module) -> tuple[int, int, int, bool]:
    """``(weight_bits, act_int_bits, act_frac_bits, found)`` of a shift layer (docs/algorithms.md §1).

    Read from the module's attributes, or from a ``config`` / ``quant_config`` / ``shift_config`` object with those
    attributes; ``found`` is False when the DeepShift defaults (5, 16, 16) had to be assumed."""
    for holder in (module, *(getattr(module, n, None) for n in ("config", "quant_config", "shift_config"))):
        if holder is None:
            continue
        values = [getattr(holder, n, None) for n in ("weight_bits", "act_int_bits", "act_frac_bits")]
        if all(isinstance(v, int) for v in values):
            return values[0], values[1], values[2], True
    return 5, 16, 16, False


def conv_output_spatial(module: nn.Module, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Output spatial size of a conv with ``module``'s geometry (used where the output is not observed)."""
    n = len(in_spatial)
    kernel = _to_tuple(module.kernel_size, n)
    stride = _to_tuple(module.stride, n)
    dilation = _to_tuple(module.dilation, n)
    padding = module.padding
    if padding == "valid":
        padding = (0,) * n
    if padding == "same":
        return tuple(in_spatial)
    padding = _to_tuple(padding, n)
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(in_spatial, kernel, stride, padding, dilation)
    )


# ------------------------------------------------------------------------------------------------ conv / linear


def _conv_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(MACs, output elements) of a (grouped) convolution from the observed shapes."""
    nd = len(module.kernel_size)
    x, y = _batched(x, nd), _batched(y, nd)
    in_ch = int(x.shape[1])
    return int(y.numel()) * (in_ch // module.groups) * _kernel_numel(module), int(y.numel())


def _conv_kind(module: nn.Module, x: torch.Tensor) -> str:
    nd = len(module.kernel_size)
    in_ch = int(_batched(x, nd).shape[1])
    if module.groups > 1 and module.groups == in_ch:
        return "depthwise "
    if module.groups > 1:
        return "grouped "
    return ""


def _dense_params(module: nn.Module, bits: int) -> tuple[int, int]:
    n = sum(int(p.numel()) for p in _own_params(module))
    return n, n * bits


def priced(op: Op, macs: int, bias_adds: int = 0, adder_macs: int = 0) -> OpCounts:
    """Counts of ``macs`` positions of operator ``op`` by the operator table (:class:`shiftaddaug_plugin.ops.OpSpec`),
    plus ``bias_adds`` additions."""
    c = OP_TABLE[op].cost(macs, adder_macs)
    return OpCounts(mults=c.mults, adds=c.adds + bias_adds, shifts=c.shifts, macs=c.macs)


def conv_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Multiplicative convolution: 1 mult + 1 add per MAC, +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    bias_adds = outs if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op=f"{_conv_kind(module, x)}conv",
        counts=priced(Op.MULT, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
    )


def conv_transpose_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def linear_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Multiplicative linear layer: 1 mult + 1 add per MAC, +1 add per output element for the bias."""
    macs, _, _ = _linear_macs(x, y)
    bias_adds = int(y.numel()) if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op="linear", counts=priced(Op.MULT, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
    )


# ------------------------------------------------------------------------------------------------ MF layers


def _shift_estimate(module: nn.Module, macs: int, bias_adds: int, op: str) -> LayerEstimate:
    w_bits, a_int, a_frac, found = shift_quant_bits(module)
    act_bits = a_int + a_frac
    w = int(module.weight.numel())
    b = _bias_numel(module)
    note = "" if found else "quantisation attributes not found: DeepShift defaults (5-bit weights, 16+16-bit input) assumed"
    return LayerEstimate(
        op=op, counts=priced(Op.SHIFT, macs, bias_adds),
        params=w + b, param_bits=w * w_bits + b * act_bits,  # bias stored at accumulator (fixed-point) width
        weight_bits=(w_bits,), act_bits=act_bits, note=note, mf_layer=True,
    )


def shift_conv_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ShiftConv2d: 1 shift + 1 add per MAC position, +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    return _shift_estimate(module, macs, outs if _bias_numel(module) else 0, f"{_conv_kind(module, x)}shift conv")


def shift_linear_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ShiftLinear: 1 shift + 1 add per MAC position, +1 add per output element for the bias."""
    macs, _, _ = _linear_macs(x, y)
    return _shift_estimate(module, macs, int(y.numel()) if _bias_numel(module) else 0, "shift linear")


def adder_conv_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """AdderConv2d: 2 adds per MAC position (subtract + accumulate), +1 add per output element for the bias."""
    macs, outs = _conv_macs(module, x, y)
    bias_adds = outs if _bias_numel(module) else 0
    params, bits = _dense_params(module, ctx.precision_bits)
    return LayerEstimate(
        op=f"{_conv_kind(module, x)}adder conv", counts=priced(Op.ADDER, macs, bias_adds),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,), act_bits=ctx.precision_bits,
        mf_layer=True,
    )


def shiftadd_conv_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def _mode_value(module: nn.Module) -> str:
    mode = getattr(module, "mode", None)
    return str(getattr(mode, "value", mode))


def _hybrid_estimate(
    module: nn.Module, op_name: str, t_macs: int, a_macs: int, merge_adds: int, bias_adds: int,
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


def hybrid_conv_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def hybrid_linear_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


# ------------------------------------------------------------------------------------------------ normalisation


def batchnorm_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """BatchNorm (also sliced HybridBatchNorm2d): folded -> 0 ops; unfolded -> 1 mult + 1 add per element."""
    channels = int(x.shape[1]) if x.dim() > 1 else int(x.shape[0])
    params = 2 * channels if getattr(module, "affine", True) and getattr(module, "weight", None) is not None else 0
    elements = int(y.numel())
    if ctx.fold_bn:
        counts = OpCounts()
        note = "folded into the preceding layer (0 ops)"
        if ctx.prev_mf:
            note = "follows an MF layer: its per-channel scale cannot be folded into MF weights; 0 ops by convention"
    else:
        counts = OpCounts(mults=elements, adds=elements)
        note = "unfolded: 1 mult + 1 add per element"
    return LayerEstimate(
        op="batchnorm", counts=counts, in_place=True, params=params, param_bits=params * ctx.precision_bits,
        weight_bits=(ctx.precision_bits,) if params else (), act_bits=ctx.precision_bits, note=note,
    )


def runtime_norm_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """LayerNorm / GroupNorm / InstanceNorm: 3 adds + 2 mults per element, +1 mult + 1 add when affine."""
    elements = int(y.numel())
    params, bits = _dense_params(module, ctx.precision_bits)
    affine = 1 if params else 0
    return LayerEstimate(
        op="norm", counts=OpCounts(mults=(2 + affine) * elements, adds=(3 + affine) * elements),
        params=params, param_bits=bits, weight_bits=(ctx.precision_bits,) if params else (),
        act_bits=ctx.precision_bits, note="statistics at run time (not foldable)",
    )


# ------------------------------------------------------------------------------------------------ pooling etc.


def _adaptive_bins(in_size: int, out_size: int) -> list[int]:
    """Exact bin lengths of adaptive pooling: [floor(i·in/out), ceil((i+1)·in/out))."""
    return [-(-((i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size)]


def _pool_windows(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], int]:
    """(window sizes of one output plane, number of output planes)."""
    nd = {"1d": 1, "2d": 2, "3d": 3}[type(module).__name__[-2:].lower()]
    x, y = _batched(x, nd), _batched(y, nd)
    planes = int(y.numel()) // int(math.prod(y.shape[-nd:]))
    if "Adaptive" in type(module).__name__:
        bins = [_adaptive_bins(int(i), int(o)) for i, o in zip(x.shape[-nd:], y.shape[-nd:])]
        windows = [1]
        for dim_bins in bins:
            windows = [w * b for w in windows for b in dim_bins]
        return windows, planes
    k = int(math.prod(_to_tuple(module.kernel_size, nd)))
    return [k] * int(math.prod(y.shape[-nd:])), planes


def max_pool_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Max pooling: k-1 comparisons (counted as adds) per output element."""
    windows, planes = _pool_windows(module, x, y)
    return LayerEstimate(
        op="max pool", counts=OpCounts(adds=planes * sum(w - 1 for w in windows)), act_bits=ctx.precision_bits,
        note="comparisons counted as adds",
    )


def avg_pool_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Average pooling: k-1 adds per output element + one 1/k scaling (shift if k is a power of two, else mult)."""
    windows, planes = _pool_windows(module, x, y)
    counts = OpCounts(adds=planes * sum(w - 1 for w in windows))
    divisor_override = getattr(module, "divisor_override", None)
    for w in windows:
        _scale_op(counts, int(divisor_override or w), planes)
    return LayerEstimate(op="avg pool", counts=counts, act_bits=ctx.precision_bits)


def activation_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Activation functions: 0 arithmetic ops (comparison / look-up table); listed for completeness."""
    params, bits = _dense_params(module, ctx.precision_bits)  # PReLU slopes
    note = "0 ops (comparison / LUT)"
    counts = OpCounts()
    if params:  # PReLU: one mult per (negative) element -- count all elements
        counts = OpCounts(mults=int(y.numel()))
        note = "learned slope: 1 mult per element"
    return LayerEstimate(
        op="activation", counts=counts, in_place=True, params=params, param_bits=bits, act_bits=ctx.precision_bits, note=note
    )


_INTERP_NEIGHBOURS = {"linear": 2, "bilinear": 4, "trilinear": 8, "bicubic": 16}


def upsample_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Upsampling: nearest 0 ops; interpolating modes n mults + n-1 adds per output element (n neighbours)."""
    mode = str(getattr(module, "mode", "nearest"))
    n = _INTERP_NEIGHBOURS.get(mode, 0)
    outs = int(y.numel())
    return LayerEstimate(
        op=f"upsample ({mode})", counts=OpCounts(mults=n * outs, adds=max(n - 1, 0) * outs),
        act_bits=ctx.precision_bits,
    )


# ------------------------------------------------------------------------------------------------ containers


def residual_block_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate | None:
    """Blocks whose ``forward`` adds a shortcut (timm ``has_skip``, mmseg ``use_res_connect``): +1 add per output
    element. Their sub-modules are counted by their own rules."""
    has_skip = getattr(module, "has_skip", getattr(module, "use_res_connect", False))
    if not has_skip:
        return None
    return LayerEstimate(op="residual add", counts=OpCounts(adds=int(y.numel())), act_bits=ctx.precision_bits)


def always_residual_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ResNet basic/bottleneck blocks (shortcut always added): +1 add per output element."""
    return LayerEstimate(op="residual add", counts=OpCounts(adds=int(y.numel())), act_bits=ctx.precision_bits)


def squeeze_excite_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """timm SqueezeExcite: global mean over H·W (as average pooling) + 1 mult per element for ``x * gate``."""
    xb = _batched(x, 2)
    hw = int(xb.shape[-1] * xb.shape[-2])
    planes = int(xb.numel()) // hw
    counts = OpCounts(adds=planes * (hw - 1), mults=int(y.numel()))
    _scale_op(counts, hw, planes)
    return LayerEstimate(
        op="squeeze-excite (mean + gate)", counts=counts, act_bits=ctx.precision_bits,
        note="convs / activations inside counted in their own rows",
    )


def attention_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """timm ``Attention`` on ``(B, N, C)``: Q·K^T and A·V (B·N·N·C MACs each, 1 mult + 1 add per MAC), the 1/sqrt(d)
    scaling of Q (B·N·C mults), softmax normalisation (B·H·N·(N-1) adds + B·H·N·N mults; exp by LUT, not counted).
    The qkv / proj linears are counted in their own rows."""
    b, n, c = (int(s) for s in x.shape[-3:]) if x.dim() >= 3 else (1, int(x.shape[0]), int(x.shape[1]))
    heads = int(getattr(module, "num_heads", 1))
    macs = 2 * b * n * n * c
    softmax_adds, softmax_mults = b * heads * n * (n - 1), b * heads * n * n
    return LayerEstimate(
        op="attention (QK^T, AV, softmax)",
        counts=OpCounts(mults=macs + b * n * c + softmax_mults, adds=macs + softmax_adds, macs=macs),
        act_bits=ctx.precision_bits, note="qkv / proj linears counted in their own rows",
    )


def transformer_block_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """timm ViT ``Block``: two residual adds (after attention and after the MLP), 1 add per element each."""
    return LayerEstimate(op="residual adds (x2)", counts=OpCounts(adds=2 * int(y.numel())), act_bits=ctx.precision_bits)


def noop_rule(module: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> None:
    """Identity, dropout, flatten, drop-path (inference): nothing to count."""
    return None


# ------------------------------------------------------------------------------------------------ the table

_OURS = "shiftaddaug_plugin.layers"

_CONV = CostRule(conv_rule)
_BN = CostRule(batchnorm_rule)

DEFAULT_RULES: dict[str, CostRule] = {
    **{type_key(c): _CONV for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    **{type_key(c): CostRule(conv_transpose_rule) for c in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
    type_key(nn.Linear): CostRule(linear_rule),
    **{type_key(c): _BN for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)},
    **{type_key(c): CostRule(runtime_norm_rule) for c in (
        nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)},
    **{type_key(c): CostRule(max_pool_rule) for c in (
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)},
    **{type_key(c): CostRule(avg_pool_rule) for c in (
        nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)},
    **{type_key(c): CostRule(activation_rule) for c in (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardswish, nn.Softmax, nn.LogSoftmax, nn.Softplus, nn.PReLU)},
    **{type_key(c): CostRule(upsample_rule) for c in (nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)},
    **{type_key(c): CostRule(noop_rule) for c in (
        nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Flatten, nn.Unflatten)},
    # our layers (keys are strings: no import needed, exact type)
    f"{_OURS}.shift.ShiftConv2d": CostRule(shift_conv_rule),
    f"{_OURS}.shift.ShiftLinear": CostRule(shift_linear_rule),
    f"{_OURS}.adder.AdderConv2d": CostRule(adder_conv_rule),
    f"{_OURS}.shiftadd.ShiftAddConv2d": CostRule(shiftadd_conv_rule, counts_children=True),
    f"{_OURS}.hybrid.HybridConv2d": CostRule(hybrid_conv_rule),
    f"{_OURS}.hybrid.HybridLinear": CostRule(hybrid_linear_rule),
    f"{_OURS}.hybrid.HybridBatchNorm2d": _BN,
    f"{_OURS}.hybrid.HybridBatchNormAct2d": CostRule(batchnorm_rule, counts_children=True),
    # timm
    "timm.layers.norm_act.BatchNormAct2d": CostRule(batchnorm_rule, counts_children=True),
    "timm.layers.norm_act.SyncBatchNormAct": CostRule(batchnorm_rule, counts_children=True),
    "timm.layers.conv2d_same.Conv2dSame": _CONV,
    "timm.layers.std_conv.StdConv2d": _CONV,
    "timm.layers.std_conv.StdConv2dSame": _CONV,
    "timm.layers.linear.Linear": CostRule(linear_rule),
    **{f"timm.layers.norm.{n}": CostRule(runtime_norm_rule) for n in ("LayerNorm", "LayerNorm2d", "GroupNorm", "GroupNorm1")},
    "timm.layers.attention.Attention": CostRule(attention_rule, counts_children=True),
    "timm.models.vision_transformer.Block": CostRule(transformer_block_rule, counts_children=True),
    "timm.layers.drop.DropPath": CostRule(noop_rule),
    "timm.layers.drop.DropBlock2d": CostRule(noop_rule),
    **{f"timm.layers.activations.{n}": CostRule(activation_rule) for n in (
        "Swish", "Mish", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "HardMish", "PReLU", "GELU", "GELUTanh",
        "QuickGELU")},
    **{f"timm.models._efficientnet_blocks.{n}": CostRule(residual_block_rule, counts_children=True) for n in (
        "ConvBnAct", "DepthwiseSeparableConv", "InvertedResidual", "UniversalInvertedResidual", "EdgeResidual",
        "CondConvResidual")},
    "timm.models._efficientnet_blocks.SqueezeExcite": CostRule(squeeze_excite_rule, counts_children=True),
    # mmcv / mmseg
    "mmcv.cnn.bricks.wrappers.Conv2d": _CONV,
    "mmcv.cnn.bricks.wrappers.Conv3d": _CONV,
    "mmcv.cnn.bricks.wrappers.Linear": CostRule(linear_rule),
    "mmcv.cnn.bricks.conv2d_adaptive_padding.Conv2dAdaptivePadding": _CONV,
    "mmcv.cnn.bricks.wrappers.ConvTranspose2d": CostRule(conv_transpose_rule),
    "mmcv.cnn.bricks.wrappers.MaxPool2d": CostRule(max_pool_rule),
    "mmcv.cnn.bricks.hswish.HSwish": CostRule(activation_rule),
    "mmcv.cnn.bricks.hsigmoid.HSigmoid": CostRule(activation_rule),
    "mmcv.cnn.bricks.swish.Swish": CostRule(activation_rule),
    "mmseg.models.utils.inverted_residual.InvertedResidual": CostRule(residual_block_rule, counts_children=True),
    "mmseg.models.backbones.resnet.BasicBlock": CostRule(always_residual_rule, counts_children=True),
    "mmseg.models.backbones.resnet.Bottleneck": CostRule(always_residual_rule, counts_children=True),
}
