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

from torch import nn

from .estimate import NOOP, CostContext, CostRule, LayerEstimate, OpCounts, Rule, type_key  # noqa: F401 - re-exported
from .layer_rules import (
    adder_conv_rule,
    conv_rule,
    conv_transpose_rule,
    hybrid_conv_rule,
    hybrid_linear_rule,
    linear_rule,
    shift_conv_rule,
    shift_linear_rule,
    shiftadd_conv_rule,
)
from .other_rules import (
    activation_rule,
    always_residual_rule,
    attention_rule,
    avg_pool_rule,
    batchnorm_rule,
    max_pool_rule,
    noop_rule,
    residual_block_rule,
    runtime_norm_rule,
    squeeze_excite_rule,
    transformer_block_rule,
    upsample_rule,
)

__all__ = ["DEFAULT_RULES", "CostContext", "CostRule", "LayerEstimate", "OpCounts", "Rule", "NOOP", "type_key"]

# ------------------------------------------------------------------------------------------------ the table

_OURS = "shiftaddaug_plugin.layers"

_CONV = CostRule(conv_rule)
_BN = CostRule(batchnorm_rule)

DEFAULT_RULES: dict[str, CostRule] = {
    **{type_key(c): _CONV for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    **{type_key(c): CostRule(conv_transpose_rule)
       for c in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
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
    f"{_OURS}.hybrid_conv.HybridConv2d": CostRule(hybrid_conv_rule),
    f"{_OURS}.hybrid_linear.HybridLinear": CostRule(hybrid_linear_rule),
    f"{_OURS}.hybrid_norm.HybridBatchNorm2d": _BN,
    f"{_OURS}.hybrid_norm.HybridBatchNormAct2d": CostRule(batchnorm_rule, counts_children=True),
    # timm
    "timm.layers.norm_act.BatchNormAct2d": CostRule(batchnorm_rule, counts_children=True),
    "timm.layers.norm_act.SyncBatchNormAct": CostRule(batchnorm_rule, counts_children=True),
    "timm.layers.conv2d_same.Conv2dSame": _CONV,
    "timm.layers.std_conv.StdConv2d": _CONV,
    "timm.layers.std_conv.StdConv2dSame": _CONV,
    "timm.layers.linear.Linear": CostRule(linear_rule),
    **{f"timm.layers.norm.{n}": CostRule(runtime_norm_rule)
       for n in ("LayerNorm", "LayerNorm2d", "GroupNorm", "GroupNorm1")},
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
