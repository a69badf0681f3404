"""Cost rules of everything that is not a conv or linear layer: normalisation, pooling, activations, upsampling and
timm containers (residual adds, squeeze-excite, attention). Conventions in :mod:`.rules`."""
from __future__ import annotations

import math
from typing import Any

import torch

from .estimate import CostContext, LayerEstimate, OpCounts, _batched, _scale_op, _to_tuple
from .layer_rules import _dense_params

# ------------------------------------------------------------------------------------------------ normalisation


def batchnorm_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def runtime_norm_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def _pool_windows(module: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], int]:
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


def max_pool_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Max pooling: k-1 comparisons (counted as adds) per output element."""
    windows, planes = _pool_windows(module, x, y)
    return LayerEstimate(
        op="max pool", counts=OpCounts(adds=planes * sum(w - 1 for w in windows)), act_bits=ctx.precision_bits,
        note="comparisons counted as adds",
    )


def avg_pool_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Average pooling: k-1 adds per output element + one 1/k scaling (shift if k is a power of two, else mult)."""
    windows, planes = _pool_windows(module, x, y)
    counts = OpCounts(adds=planes * sum(w - 1 for w in windows))
    divisor_override = getattr(module, "divisor_override", None)
    for w in windows:
        _scale_op(counts, int(divisor_override or w), planes)
    return LayerEstimate(op="avg pool", counts=counts, act_bits=ctx.precision_bits)


def activation_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Activation functions: 0 arithmetic ops (comparison / look-up table); listed for completeness."""
    params, bits = _dense_params(module, ctx.precision_bits)  # PReLU slopes
    note = "0 ops (comparison / LUT)"
    counts = OpCounts()
    if params:  # PReLU: one mult per (negative) element -- count all elements
        counts = OpCounts(mults=int(y.numel()))
        note = "learned slope: 1 mult per element"
    return LayerEstimate(
        op="activation", counts=counts, in_place=True, params=params, param_bits=bits, act_bits=ctx.precision_bits,
        note=note
    )


_INTERP_NEIGHBOURS = {"linear": 2, "bilinear": 4, "trilinear": 8, "bicubic": 16}


def upsample_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """Upsampling: nearest 0 ops; interpolating modes n mults + n-1 adds per output element (n neighbours)."""
    mode = str(getattr(module, "mode", "nearest"))
    n = _INTERP_NEIGHBOURS.get(mode, 0)
    outs = int(y.numel())
    return LayerEstimate(
        op=f"upsample ({mode})", counts=OpCounts(mults=n * outs, adds=max(n - 1, 0) * outs),
        act_bits=ctx.precision_bits,
    )


# ------------------------------------------------------------------------------------------------ containers


def residual_block_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate | None:
    """Blocks whose ``forward`` adds a shortcut (timm ``has_skip``, mmseg ``use_res_connect``): +1 add per output
    element. Their sub-modules are counted by their own rules."""
    has_skip = getattr(module, "has_skip", getattr(module, "use_res_connect", False))
    if not has_skip:
        return None
    return LayerEstimate(op="residual add", counts=OpCounts(adds=int(y.numel())), act_bits=ctx.precision_bits)


def always_residual_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """ResNet basic/bottleneck blocks (shortcut always added): +1 add per output element."""
    return LayerEstimate(op="residual add", counts=OpCounts(adds=int(y.numel())), act_bits=ctx.precision_bits)


def squeeze_excite_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def attention_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
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


def transformer_block_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> LayerEstimate:
    """timm ViT ``Block``: two residual adds (after attention and after the MLP), 1 add per element each."""
    return LayerEstimate(op="residual adds (x2)", counts=OpCounts(adds=2 * int(y.numel())), act_bits=ctx.precision_bits)


def noop_rule(module: Any, x: torch.Tensor, y: torch.Tensor, ctx: CostContext) -> None:
    """Identity, dropout, flatten, drop-path (inference): nothing to count."""
    return None
