"""Analysis: which channels of a dense model widen together, and by which multipliers (docs/algorithms.md §3-§4).

:func:`analyze` runs **one real forward pass** of the dense model under a ``TorchFunctionMode`` that sees every
``conv2d`` / ``batch_norm`` / ``linear`` / elementwise / ``cat`` / pooling / reshape call, maps parameters back to
module names, and joins channel dimensions into *groups* with union-find. No per-architecture code: the same rules
cover timm's EfficientNet family and mmseg backbones / decode heads.

Rules (channel = dim 1 of an ``N, C, ...`` tensor):

* dense conv (``groups=1``): its output starts a new group; a depthwise conv (``groups == in == out``) keeps its
  input's group; any other grouped conv raises ``ValueError``.
* batch norm, activations, dropout, pooling, ``interpolate``, spatial ``pad``, spatial reductions
  (``mean((2, 3))``), reshapes/indexing that keep ``shape[:2]``: the output is in the input's group.
* elementwise ``add``/``sub`` of two channel tensors joins their groups (residual: every block of a stage joined by
  skip connections shares one group); ``mul``/``div`` joins too (squeeze-excitation gate). A per-channel operand
  that is not a tracked activation (a parameter such as a layer scale, a constant) fixes the group.
* ``linear`` consumes its input group; its output is never widened (classifier).
* **fixed** (never widened) groups: the model input; every model output (logits, returned features); channels
  entering or leaving ``torch.cat`` along channels (the target slice must stay leading, concatenation would
  interleave it); inputs and outputs of every op not listed above (``split``, ``permute``, channel shuffle,
  ``group_norm``, ...) and of layers the converter leaves alone (``filter_fn``).

Kinds of widened groups (which multiplier list applies):

* ``mid`` (``aug_expand_list``): not joined by a residual add, and either read by a depthwise conv and written
  only by 1×1 convs inside one sub-module of the model (the expanded channels of an inverted-residual block,
  with its squeeze-excite gate; not a backbone output read by a head's depthwise conv), or written
  by one dense conv and read by 1×1 convs of the same parent module (fused / edge-residual blocks). In networks
  of plain depthwise-separable blocks without expansion (LCNet) the block outputs feeding the next depthwise conv
  match the first rule and are treated as mid channels too.
* ``width`` (``aug_width_mult_list``): everything else (block outputs / residual streams, stem, heads, SE
  bottlenecks, classifier input, decode-head channels).

Operators: ``config.op`` for convs, shift for linear layers; ``op_overrides`` first, then the stem conv
(``keep_first_conv_mult``) and the output layers (``keep_classifier_mult``: linear layers and convs whose
un-normalised output is a model output) may stay multiplicative. With ``op='adder'``/``'shiftadd'`` a conv whose
output does not go straight into a batch norm (squeeze-excite convs, logits convs) uses ``'shift'`` instead:
AdderNet outputs are large and negative and need a batch norm right after them (docs/algorithms.md §2); an explicit
``op_overrides`` entry still forces the adder there.

The pass runs in eval mode under ``no_grad`` (flags restored). Every convertible layer must run in it (a module
applied twice shares one width); layers the pass never reaches (an mmseg auxiliary head) raise ``ValueError``:
exercise them with ``forward_fn`` or exclude them with ``filter_fn``.

The result, a :class:`ConversionPlan`, is printable (``print(plan)``) and is stored on the converted model; width
sampling, channel sorting, BN recalibration and export read it.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..ops import linear_op_values, op_spec
from ..protocol import hybrid_modules, is_hybrid_layer
from .config import ConvertConfig, augmented_width
from .handlers import GUARDED_BASES, UNSUPPORTED_MULT_TYPES, handler_table, layer_kind
from .plan import PLAN_ATTR, ChannelGroup, ConversionPlan, FilterFn, ForwardFn, LayerPlan
from .tracing import GroupTracer, Node

__all__ = ["analyze", "check_not_converted"]


# ================================================================================================= analyze
def _default_example_input(model: nn.Module) -> Tensor:
    """A 1x3x224x224-like random input: channels from the first conv, size from timm's pretrained config."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError("cannot infer an example input (the model has no nn.Conv2d); pass example_input=")
    size: tuple[int, ...] = (first.in_channels, 224, 224)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)) and len(cfg["input_size"]) == 3:
        size = tuple(int(s) for s in cfg["input_size"])
    p = first.weight
    return torch.randn(1, *size, device=p.device, dtype=p.dtype)


def _default_forward(model: nn.Module, example_input: Any) -> Any:
    return model(example_input)


def check_not_converted(model: nn.Module) -> None:
    """``ValueError`` if ``model`` already contains hybrid layers or a plan."""
    if getattr(model, PLAN_ATTR, None) is not None:
        raise ValueError("the model is already converted (it carries a conversion plan); convert the dense model, "
                         "or use the converted one as is")
    for name, m in hybrid_modules(model):
        if not is_hybrid_layer(m):
            continue
        raise ValueError(f"the model is already converted: '{name}' is a {type(m).__name__}; converting twice "
                         "would widen twice. Convert the original dense model instead")


def _resolve_op(name: str, kind: str, role: str, config: ConvertConfig, normed: bool = True) -> str | None:
    if kind == "bn":
        return None
    override = config.override_for(name)
    if override is not None:
        if kind == "linear" and not op_spec(override).linear:
            raise ValueError(f"op_overrides gives linear layer '{name}' op={override!r}; linear layers support "
                             f"{', '.join(map(repr, linear_op_values()))}")
        return override
    if role == "first" and config.keep_first_conv_mult:
        return "mult"
    if role == "output" and config.keep_classifier_mult:
        return "mult"
    if kind == "linear":
        return "mult" if config.op == "mult" else "shift"
    if op_spec(config.op).has_adder and not normed:
        return "shift"  # adder outputs need a batch norm right after them (docs/algorithms.md §2)
    return config.op


def analyze(
    model: nn.Module,
    config: ConvertConfig | None = None,
    example_input: Any = None,
    *,
    filter_fn: FilterFn | None = None,
    forward_fn: ForwardFn | None = None,
) -> ConversionPlan:
    """Trace one forward pass of the dense ``model`` and return its :class:`ConversionPlan` (module docstring).

    Args:
        model: the dense model (not modified: traced in eval mode under ``no_grad``, train flags restored).
        config: :class:`ConvertConfig` (defaults if ``None``).
        example_input: input of the traced pass (default: random ``1 x C x H x W`` from timm's ``input_size`` or
            224 px). Small inputs are fine; the channel structure does not depend on the resolution.
        filter_fn: ``filter_fn(module, name) -> bool``; convertible leaves for which it returns ``False`` are left
            alone and their channels fixed.
        forward_fn: ``forward_fn(model, example_input)`` runs the pass (default ``model(example_input)``); use it
            to exercise every branch to convert (e.g. an mmseg auxiliary head).

    Raises ``ValueError`` for converted models, unsupported layer subclasses, non-depthwise grouped convs, layers
    the pass never called, and bad per-layer ops.
    """
    config = ConvertConfig() if config is None else config
    if not isinstance(config, ConvertConfig):
        raise TypeError(f"config must be a ConvertConfig, got {type(config).__name__}")
    check_not_converted(model)
    table = handler_table()
    kinds: dict[str, str] = {}
    excluded: list[str] = []
    owners: dict[int, tuple[str, nn.Module]] = {}
    seen: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen and layer_kind(name, module, table) is not None:
            raise ValueError(f"module '{name}' is the same object as '{seen[id(module)]}'; a shared layer cannot be "
                             "rewritten at one place only. Give each place its own module or exclude it (filter_fn)")
        seen.setdefault(id(module), name)
    watched = (*GUARDED_BASES, *UNSUPPORTED_MULT_TYPES)  # an exclusion of these is recorded for the audit
    for name, module in model.named_modules():
        kind = layer_kind(name, module, table) if filter_fn is None or filter_fn(module, name) else None
        if kind is None and filter_fn is not None and (type(module) in table or isinstance(module, watched)):
            excluded.append(name)
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            owners.setdefault(id(tensor), (name, module))
        if kind is not None:
            kinds[name] = kind

    example_input = _default_example_input(model) if example_input is None else example_input
    forward = _default_forward if forward_fn is None else forward_fn
    tracer = GroupTracer(owners, kinds)
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        tracer.mark_inputs(example_input)
        with torch.no_grad(), tracer:
            output = forward(model, example_input)
        tracer.mark_outputs(output)
    finally:
        for m, flag in flags.items():
            m.training = flag

    missing = [n for n in kinds if n not in tracer.calls]
    if missing:
        shown = ", ".join(f"'{n}'" for n in missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} convertible layer(s) never ran in the example forward pass: {shown}; their "
                         "channel groups are unknown. Pass forward_fn=... that also runs them (e.g. an auxiliary "
                         "head) or exclude them with filter_fn")
    return _build_plan(tracer, config, kinds, tuple(excluded))


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _common_parent(names: list[str]) -> str:
    """Dotted path of the deepest module containing all ``names`` ('' = the model itself)."""
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _siblings(node: Node, kernel: dict[str, tuple[int, ...]]) -> bool:
    """One dense producer and 1x1 project consumer(s) (pooled squeeze-excite readers aside) in the same block."""
    producer = node.producers[0]
    project = [n for n, pooled in node.consumers if not pooled]
    return bool(project) and _parent(producer) != "" and all(
        kernel.get(n) == (1, 1) and _parent(n) == _parent(producer) and n != producer for n in project)


def _build_plan(tracer: GroupTracer, config: ConvertConfig, kinds: dict[str, str],
                excluded: tuple[str, ...]) -> ConversionPlan:
    roots = sorted({tracer.find(c.in_group) for c in tracer.calls.values()}
                   | {tracer.find(c.out_group) for c in tracer.calls.values()})
    renumber = {r: i for i, r in enumerate(roots)}
    groups: dict[int, ChannelGroup] = {}
    for r in roots:
        node = tracer.nodes[r]
        if r in {tracer.find(g) for g in tracer.input_groups} and "model input" not in node.fixed:
            node.fixed.insert(0, "model input")
        is_mid = not node.residual and bool(node.producers) and (
            # inverted residual: 1x1 expand -> depthwise (-> squeeze-excite) -> project
            (bool(node.depthwise) and all(tracer.kernel.get(p) == (1, 1) for p in node.producers)
             and _common_parent([*node.producers, *node.depthwise]) != "")
            # fused / edge residual: k x k expand -> 1x1 project, both children of the same block
            or (not node.depthwise and len(node.producers) == 1 and _siblings(node, tracer.kernel)))
        kind = "fixed" if node.fixed else ("mid" if is_mid else "width")
        mults: tuple[float, ...] = ()
        if kind != "fixed":
            mults = tuple(config.aug_expand_list if kind == "mid" else config.aug_width_mult_list)
        max_c = max([node.size, *(augmented_width(node.size, m, config.divisor) for m in mults)])
        uniq = lambda xs: tuple(dict.fromkeys(xs))  # noqa: E731 - order-preserving dedup
        groups[renumber[r]] = ChannelGroup(
            gid=renumber[r], channels=node.size, kind=kind, multipliers=mults, max_channels=max_c,
            producers=uniq(node.producers), depthwise=uniq(node.depthwise), norms=uniq(node.norms),
            consumers=uniq(n for n, _ in node.consumers),
            project=uniq(n for n, pooled in node.consumers if not pooled), residual=node.residual,
            fixed_reasons=tuple(node.fixed),
        )
    layers: dict[str, LayerPlan] = {}
    for name, call in tracer.calls.items():
        gin, gout = groups[renumber[tracer.find(call.in_group)]], groups[renumber[tracer.find(call.out_group)]]
        role = ""
        if name == tracer.first_conv:
            role = "first"
        elif call.kind == "linear" or (call.kind == "conv" and "model output" in gout.fixed_reasons and not gout.norms):
            role = "output"
        layers[name] = LayerPlan(
            name=name, kind=call.kind, type_name=kinds[name], in_group=gin.gid, out_group=gout.gid,
            target_in=gin.channels, target_out=gout.channels, max_in=gin.max_channels, max_out=gout.max_channels,
            op=_resolve_op(name, "linear" if call.kind == "linear" else ("bn" if call.kind == "bn" else "conv"),
                           role, config, normed=name in tracer.normed),
            role=role,
        )
    return ConversionPlan(config=copy.deepcopy(config), groups=groups, layers=layers, excluded=excluded)
