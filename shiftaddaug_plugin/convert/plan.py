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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..ops import OP_TABLE, linear_op_values
from .config import ConvertConfig, augmented_width
from ..protocol import hybrid_modules, is_hybrid_layer, unwrap
from .handlers import GUARDED_BASES, handler_table, layer_kind

__all__ = ["ChannelGroup", "LayerPlan", "ConversionPlan", "analyze", "get_plan", "PLAN_ATTR", "FilterFn", "ForwardFn"]

PLAN_ATTR = "_shiftaddaug_plan"
FilterFn = Callable[[nn.Module, str], bool]
ForwardFn = Callable[[nn.Module, Any], Any]


# ================================================================================================= plan objects
@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must share one width (one entry of the plan)."""

    gid: int
    channels: int  #: target width
    kind: str  #: 'mid' | 'width' | 'fixed'
    multipliers: tuple[float, ...]  #: () for fixed groups
    max_channels: int
    producers: tuple[str, ...]  #: dense convs writing these channels
    depthwise: tuple[str, ...]  #: depthwise convs inside the group
    norms: tuple[str, ...]  #: batch norms of the group
    consumers: tuple[str, ...]  #: dense convs / linears reading the group
    project: tuple[str, ...]  #: consumers that do not read a globally pooled copy (importance for sorting)
    residual: bool  #: joined by an elementwise add of two activations
    fixed_reasons: tuple[str, ...]

    @property
    def widened(self) -> bool:
        return self.max_channels > self.channels

    def width(self, multiplier: float, divisor: int) -> int:
        """Active width at ``multiplier`` (``channels`` for fixed groups)."""
        if self.kind == "fixed":
            return self.channels
        return min(self.max_channels, augmented_width(self.channels, multiplier, divisor))


@dataclass(frozen=True)
class LayerPlan:
    """One convertible leaf: its kind, groups, widths and target operator."""

    name: str
    kind: str  #: 'conv' | 'dwconv' | 'linear' | 'bn'
    type_name: str
    in_group: int
    out_group: int
    target_in: int
    target_out: int
    max_in: int
    max_out: int
    op: str | None  #: None for batch norms
    role: str  #: 'first' (stem conv), 'output' (classifier / logits), '' otherwise


@dataclass
class ConversionPlan:
    """Channel groups and per-layer decisions of one model (printable; stored on the converted model)."""

    config: ConvertConfig
    groups: dict[int, ChannelGroup]
    layers: dict[str, LayerPlan]
    excluded: tuple[str, ...] = ()  #: convertible-type leaves left alone by ``filter_fn``

    @property
    def kept_mult(self) -> tuple[str, ...]:
        """Converted conv/linear layers whose target part stays multiplicative by configuration."""
        return tuple(n for n, lp in self.layers.items() if lp.op == "mult")

    def groups_of_kind(self, kind: str) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.kind == kind]

    def layer_table(self) -> str:
        """One line per converted layer: kind, op, target and max widths."""
        rows = [f"{'layer':<48} {'kind':<6} {'op':<8} {'target':>11} {'max':>11} role"]
        for lp in self.layers.values():
            rows.append(f"{lp.name:<48} {lp.kind:<6} {lp.op or '-':<8} {lp.target_in:>5}->{lp.target_out:<5} "
                        f"{lp.max_in:>5}->{lp.max_out:<5} {lp.role}")
        return "\n".join(rows)

    def __str__(self) -> str:
        kinds = {k: len(self.groups_of_kind(k)) for k in ("mid", "width", "fixed")}
        head = (f"ConversionPlan: {len(self.layers)} layers, {len(self.groups)} channel groups "
                f"({kinds['mid']} mid, {kinds['width']} width, {kinds['fixed']} fixed); op={self.config.op}, "
                f"width x{list(self.config.aug_width_mult_list)}, expand x{list(self.config.aug_expand_list)}")
        rows = [head, f"{'gid':>4} {'kind':<6} {'target':>6} {'max':>5}  layers / reason"]
        for g in sorted(self.groups.values(), key=lambda g: g.gid):
            members = [*g.producers, *g.depthwise, *g.norms]
            shown = ", ".join(members[:4]) + (f", ... (+{len(members) - 4})" if len(members) > 4 else "")
            why = f"  [fixed: {'; '.join(g.fixed_reasons[:2])}]" if g.kind == "fixed" else ""
            rows.append(f"{g.gid:>4} {g.kind:<6} {g.channels:>6} {g.max_channels:>5}  {shown or '-'}{why}")
        if self.kept_mult:
            rows.append(f"kept multiplicative by config: {', '.join(self.kept_mult)}")
        if self.excluded:
            rows.append(f"left alone (filter_fn): {', '.join(self.excluded)}")
        return "\n".join(rows)


def get_plan(model: nn.Module) -> ConversionPlan:
    """The plan stored by :func:`~shiftaddaug_plugin.convert.convert` on ``model`` (or on ``model.module`` for
    DDP / EMA wrappers); ``ValueError`` if the model was not converted."""
    for candidate in (model, unwrap(model)):
        plan = getattr(candidate, PLAN_ATTR, None)
        if isinstance(plan, ConversionPlan):
            return plan
    raise ValueError(f"{type(model).__name__} carries no conversion plan; convert it first with "
                     "shiftaddaug_plugin.convert.convert(model, config)")


def planned_root(model: nn.Module) -> tuple[nn.Module, ConversionPlan]:
    """(module whose ``named_modules`` names match the plan, plan): unwraps DDP/EMA ``.module`` wrappers."""
    plan = get_plan(model)
    root = model if getattr(model, PLAN_ATTR, None) is plan else unwrap(model)
    return root, plan


# ================================================================================================= tracing
_ELEMENTWISE_ADD = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__",
                              "__isub__", "__rsub__"})
_ELEMENTWISE_OTHER = frozenset({
    "mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__", "__rtruediv__",
    "maximum", "minimum", "where", "lerp", "addcmul", "addcdiv",
    # unary, channel-wise
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "sigmoid", "sigmoid_", "silu", "silu_", "gelu", "tanh", "tanh_", "softplus", "mish", "mish_", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "threshold", "threshold_", "rrelu",
    "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "clone", "contiguous", "detach", "detach_", "to", "float", "double", "half", "bfloat16", "type", "type_as",
    "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_", "abs", "abs_",
    "neg", "__neg__", "__abs__", "exp", "log", "sqrt", "rsqrt", "square", "pow", "__pow__", "floor", "ceil",
    "round", "sign", "reciprocal", "nan_to_num", "requires_grad_", "zeros_like", "ones_like", "empty_like",
    "full_like", "rand_like", "randn_like",
})
_SPATIAL = frozenset({"avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d",
                      "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "lp_pool2d", "interpolate",
                      "upsample", "upsample_bilinear", "upsample_nearest", "pixel_unshuffle_spatial"})
_RESHAPE = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "__getitem__", "expand", "expand_as",
                      "repeat"})
_REDUCE = frozenset({"mean", "sum", "amax", "amin", "std", "var", "nanmean", "logsumexp"})
_CAT = frozenset({"cat", "concat", "concatenate"})
_IGNORE = frozenset({"size", "dim", "numel", "__len__", "_assert", "is_floating_point", "is_contiguous",
                     "__format__", "__repr__", "__bool__", "new_empty", "new_zeros", "new_ones", "new_full",
                     "new_tensor", "get_device", "element_size", "stride", "data_ptr", "__hash__"})


def _index_keeps_channels(index: Any, ndim: int) -> bool:
    """True if ``x[index]`` takes every channel in order (basic slicing of the other dims only)."""
    idx = index if isinstance(index, tuple) else (index,)
    if any(i is None for i in idx) or sum(i is Ellipsis for i in idx) > 1:
        return False  # new axes / ambiguous: treat as a layout change
    if Ellipsis in idx:
        pos = next(k for k, i in enumerate(idx) if i is Ellipsis)
        idx = idx[:pos] + (slice(None),) * (ndim - len(idx) + 1) + idx[pos + 1:]
    per_dim = list(idx) + [slice(None)] * max(0, ndim - len(idx))
    batch_ok = isinstance(per_dim[0], slice) or (isinstance(per_dim[0], Tensor) and per_dim[0].dim() == 1)
    return len(per_dim) > 1 and batch_ok and isinstance(per_dim[1], slice) and per_dim[1] == slice(None)


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else str(func)


def _tensors(obj: Any, depth: int = 0) -> Iterator[Tensor]:
    """Tensors in ``obj`` (nested lists/tuples/dicts, a few levels deep)."""
    if isinstance(obj, Tensor):
        yield obj
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o, depth + 1)


@dataclass
class _Node:
    size: int
    parent: int
    fixed: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, bool]] = field(default_factory=list)
    residual: bool = False


@dataclass
class _Call:
    kind: str
    in_group: int
    out_group: int


class _GroupTracer(TorchFunctionMode):
    """Records channel groups during one forward pass (see the module docstring for the rules)."""

    def __init__(self, owners: dict[int, tuple[str, nn.Module]], kinds: dict[str, str]) -> None:
        super().__init__()
        self.owners = owners  # id(parameter or buffer) -> (module name, module)
        self.kinds = kinds  # convertible module name -> 'conv' | 'linear' | 'bn'
        self.nodes: list[_Node] = []
        self.tensor_group: dict[int, int] = {}
        self.pooled: set[int] = set()
        self.keep: list[Tensor] = []  # keeps traced tensors alive so that ids stay unique
        self.calls: dict[str, _Call] = {}
        self.kernel: dict[str, tuple[int, ...]] = {}
        self.input_groups: set[int] = set()
        self.first_conv: str | None = None
        self.produced_by: dict[int, str] = {}  # id(conv output) -> conv name
        self.normed: set[str] = set()  # convs whose output goes straight into a batch norm

    # --------------------------------------------------------------------------------------- union-find
    def find(self, g: int) -> int:
        root = g
        while self.nodes[root].parent != root:
            root = self.nodes[root].parent
        while self.nodes[g].parent != root:
            self.nodes[g].parent, g = root, self.nodes[g].parent
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        na, nb = self.nodes[ra], self.nodes[rb]
        if na.size != nb.size:  # cannot happen for same-shaped operands; be safe
            self.fix(ra, "joined with a group of another width")
            self.fix(rb, "joined with a group of another width")
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        nk, ng = self.nodes[keep], self.nodes[gone]
        ng.parent = keep
        nk.fixed += ng.fixed
        nk.producers += ng.producers
        nk.depthwise += ng.depthwise
        nk.norms += ng.norms
        nk.consumers += ng.consumers
        nk.residual = nk.residual or ng.residual
        if gone in self.input_groups:
            self.input_groups.add(keep)
        return keep

    def new_group(self, size: int, fixed: str | None = None) -> int:
        gid = len(self.nodes)
        self.nodes.append(_Node(size=size, parent=gid, fixed=[fixed] if fixed else []))
        return gid

    def fix(self, g: int, reason: str) -> None:
        node = self.nodes[self.find(g)]
        if reason not in node.fixed and len(node.fixed) < 8:
            node.fixed.append(reason)

    # --------------------------------------------------------------------------------------- tensors
    def group_of(self, t: Tensor) -> int | None:
        g = self.tensor_group.get(id(t))
        return None if g is None else self.find(g)

    def assign(self, t: Tensor, g: int, pooled: bool = False) -> None:
        if t.dim() < 2 or t.shape[1] != self.nodes[self.find(g)].size:
            return
        self.tensor_group[id(t)] = g
        self.keep.append(t)
        if pooled:
            self.pooled.add(id(t))

    def assign_new(self, t: Tensor, fixed: str | None, pooled: bool = False) -> int | None:
        if t.dim() < 2:
            return None
        g = self.new_group(int(t.shape[1]), fixed)
        self.assign(t, g, pooled)
        return g

    def ensure(self, t: Tensor, what: str) -> int:
        g = self.group_of(t)
        if g is None:
            g = self.new_group(int(t.shape[1]), f"{what} reads a tensor not derived from the model input")
            self.assign(t, g)
        return g

    def mark_inputs(self, example_input: Any) -> None:
        for t in _tensors(example_input):
            if t.dim() >= 2:
                g = self.assign_new(t, "model input")
                if g is not None:
                    self.input_groups.add(g)

    def mark_outputs(self, output: Any) -> None:
        for t in _tensors(output):
            g = self.group_of(t)
            if g is not None:
                self.fix(g, "model output")

    # --------------------------------------------------------------------------------------- dispatch
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.record(_func_name(func), args, kwargs, out)
        return out

    def record(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        if name in _IGNORE:
            return
        if name == "conv2d":
            return self._conv(args, kwargs, out)
        if name == "linear":
            return self._linear(args, kwargs, out)
        if name == "batch_norm":
            return self._batch_norm(args, kwargs, out)
        grouped = [t for t in _tensors((args, kwargs)) if t.dim() >= 2 and self.group_of(t) is not None]
        if not grouped:
            return
        outs = [t for t in _tensors(out) if t.dim() >= 2]
        if name in _ELEMENTWISE_ADD or name in _ELEMENTWISE_OTHER:
            return self._elementwise(name, args, kwargs, grouped, outs)
        if name in _CAT:
            return self._cat(name, args, kwargs, grouped, outs)
        if name in _SPATIAL or name == "pad":
            return self._spatial(name, args, kwargs, grouped, outs)
        if name in _RESHAPE:
            return self._reshape(name, args, grouped, outs)
        if name in _REDUCE:
            return self._reduce(name, args, kwargs, grouped, outs)
        if name == "__get__":  # tensor properties: .data keeps the layout, .T / .mT do not
            return self._same_shape_or_fix(name, grouped, outs)
        in_place = name == "__setitem__" or (name.endswith("_") and not name.endswith("__"))
        if outs or in_place:
            self._fix_all(f"unsupported op '{name}'", grouped, outs)

    # --------------------------------------------------------------------------------------- op rules
    def _fix_all(self, reason: str, grouped: Iterable[Tensor], outs: Iterable[Tensor]) -> None:
        for t in grouped:
            self.fix(self.group_of(t), f"enters {reason}")  # type: ignore[arg-type]
        for t in outs:
            g = self.group_of(t)
            if g is None:
                self.assign_new(t, f"leaves {reason}")
            else:
                self.fix(g, f"leaves {reason}")

    def _same_shape_or_fix(self, name: str, grouped: list[Tensor], outs: list[Tensor]) -> None:
        src = grouped[0]
        if len(grouped) == 1 and all(o.shape == src.shape for o in outs):
            for o in outs:
                self.assign(o, self.group_of(src), id(src) in self.pooled)  # type: ignore[arg-type]
        else:
            self._fix_all(f"op '{name}'", grouped, outs)

    def _elementwise(self, name: str, args: tuple, kwargs: dict, grouped: list[Tensor], outs: list[Tensor]) -> None:
        if not outs:
            return
        out = outs[0]
        c = int(out.shape[1])
        channel = [t for t in grouped if t.shape[1] == c and t.dim() == out.dim()]
        reason = None
        for t in _tensors((args, kwargs)):
            if t.dim() == 0 or any(t is g for g in channel):
                continue
            lead = out.dim() - t.dim()  # broadcasting aligns trailing dims
            if lead < 0 or lead >= 2 or t.shape[1 - lead] == 1:
                continue  # does not reach the channel dim / broadcasts over it (attention map, drop-path mask)
            if self.group_of(t) is None:
                reason = f"'{name}' with a per-channel tensor that is not a tracked activation (parameter/constant)"
            else:
                reason = f"'{name}' of tensors with different channel layouts"
        if not channel:
            self._fix_all(f"op '{name}'", grouped, outs)
            return
        g = self.find(self.group_of(channel[0]))  # type: ignore[arg-type]
        for t in channel[1:]:
            g = self.union(g, self.group_of(t))  # type: ignore[arg-type]
        pooled = all(id(t) in self.pooled for t in channel)
        if name in _ELEMENTWISE_ADD and len(channel) > 1 and not any(id(t) in self.pooled for t in channel):
            self.nodes[self.find(g)].residual = True
        if reason is not None:
            self.fix(g, reason)
        for o in outs:
            if o.shape[1] == c:
                self.assign(o, g, pooled)
            else:
                self._fix_all(f"op '{name}'", channel, [o])

    def _cat(self, name: str, args: tuple, kwargs: dict, grouped: list[Tensor], outs: list[Tensor]) -> None:
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        ndim = outs[0].dim() if outs else 0
        if outs and isinstance(dim, int) and dim % ndim != 1 and all(t.dim() == ndim for t in grouped):
            g = self.find(self.group_of(grouped[0]))  # type: ignore[arg-type]
            for t in grouped[1:]:  # concatenation along batch/space keeps the channel layout: one group
                g = self.union(g, self.group_of(t))  # type: ignore[arg-type]
            for o in outs:
                self.assign(o, g)
            return
        self._fix_all(f"torch.{name} along channels", grouped, outs)

    def _spatial(self, name: str, args: tuple, kwargs: dict, grouped: list[Tensor], outs: list[Tensor]) -> None:
        src = grouped[0]
        if name == "pad":
            pad = args[1] if len(args) > 1 else kwargs.get("pad", ())
            if len(pad) > 2 * (src.dim() - 2):
                return self._fix_all("F.pad over the channel dimension", grouped, outs)
        if len(grouped) != 1 or any(o.shape[:2] != src.shape[:2] for o in outs[:1]):
            return self._fix_all(f"op '{name}'", grouped, outs)
        out = outs[0]
        pooled = id(src) in self.pooled or (name != "pad" and all(s == 1 for s in out.shape[2:]))
        self.assign(out, self.group_of(src), pooled)  # type: ignore[arg-type]
        for o in outs[1:]:  # e.g. max-pool indices
            self.assign_new(o, f"indices of '{name}'")

    def _reshape(self, name: str, args: tuple, grouped: list[Tensor], outs: list[Tensor]) -> None:
        src = args[0] if args and isinstance(args[0], Tensor) else grouped[0]  # expand_as(other): other = shape only
        ok = (self.group_of(src) is not None and len(outs) == 1 and outs[0].dim() >= 2
              and outs[0].shape[:2] == src.shape[:2])
        if ok and name == "__getitem__":
            ok = _index_keeps_channels(args[1] if len(args) > 1 else None, src.dim())
        if ok:
            self.assign(outs[0], self.group_of(src), id(src) in self.pooled)  # type: ignore[arg-type]
        else:
            self._fix_all(f"'{name}' changing the channel layout", grouped, outs)

    def _reduce(self, name: str, args: tuple, kwargs: dict, grouped: list[Tensor], outs: list[Tensor]) -> None:
        src = grouped[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim", None)
        if not outs:
            return  # full reduction to a scalar / vector: no channel layout leaves
        if dims is None or len(grouped) != 1:
            return self._fix_all(f"'{name}'", grouped, outs)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        norm = {d % src.dim() for d in dims}
        if norm & {0, 1} or outs[0].shape[:2] != src.shape[:2]:
            return self._fix_all(f"'{name}' over the batch/channel dimension", grouped, outs)
        pooled = id(src) in self.pooled or norm >= set(range(2, src.dim()))
        self.assign(outs[0], self.group_of(src), pooled)  # type: ignore[arg-type]

    # --------------------------------------------------------------------------------------- layers
    def _owner(self, t: Any) -> tuple[str, nn.Module] | None:
        return self.owners.get(id(t)) if isinstance(t, Tensor) else None

    def _call(self, name: str, kind: str, gin: int, gout: int) -> None:
        prev = self.calls.get(name)
        if prev is None:
            self.calls[name] = _Call(kind, gin, gout)
        else:  # a module applied twice: both uses share its widths
            self.union(prev.in_group, gin)
            self.union(prev.out_group, gout)

    def _conv(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = args[0] if args else kwargs["input"]
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        owner = self._owner(weight)
        gin = self.ensure(x, "a conv")
        if owner is None or self.kinds.get(owner[0]) != "conv":
            what = f"conv '{owner[0]}' ({type(owner[1]).__name__}, not converted)" if owner else "a functional conv2d"
            self.fix(gin, f"enters {what}")
            self.assign_new(out, f"leaves {what}")
            return
        name, mod = owner
        assert isinstance(mod, nn.Conv2d)
        self.kernel[name] = tuple(mod.kernel_size)
        pooled = id(x) in self.pooled
        self.produced_by[id(out)] = name
        if mod.groups == 1:
            gout = self.assign_new(out, None, pooled)
            assert gout is not None
            self.nodes[self.find(gout)].producers.append(name)
            self.nodes[self.find(gin)].consumers.append((name, pooled))
            self._call(name, "conv", gin, gout)
        elif mod.groups == mod.in_channels == mod.out_channels:
            self.assign(out, gin, pooled)
            self.nodes[self.find(gin)].depthwise.append(name)
            self._call(name, "dwconv", gin, gin)
        else:
            raise ValueError(
                f"cannot convert conv '{name}': groups={mod.groups} with in_channels={mod.in_channels}, "
                f"out_channels={mod.out_channels} is neither dense (groups=1) nor depthwise (groups == in == out), "
                f"which hybrid layers do not support. Exclude it with convert(..., filter_fn=lambda module, name: "
                f"name != '{name}') (its channels then keep their target width)"
            )
        if self.first_conv is None and self.find(gin) in {self.find(g) for g in self.input_groups}:
            self.first_conv = name

    def _linear(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = args[0] if args else kwargs["input"]
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        owner = self._owner(weight)
        if owner is None or self.kinds.get(owner[0]) != "linear":
            if self.group_of(x) is not None:
                what = f"linear '{owner[0]}' (not converted)" if owner else "a functional linear"
                self._fix_all(what, [x], [t for t in _tensors(out) if t.dim() >= 2])
            return
        name = owner[0]
        if x.dim() != 2:
            raise ValueError(
                f"cannot convert linear '{name}': it is applied to a {x.dim()}-D input of shape {tuple(x.shape)}; "
                "hybrid linear layers support (N, features) classifier inputs. Exclude it with convert(..., "
                f"filter_fn=lambda module, name: name != '{name}')"
            )
        gin = self.ensure(x, "a linear layer")
        gout = self.assign_new(out, "linear output (classifier outputs are not widened)")
        assert gout is not None
        self.nodes[self.find(gin)].consumers.append((name, id(x) in self.pooled))
        self._call(name, "linear", gin, gout)

    def _batch_norm(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = args[0] if args else kwargs["input"]
        params = [args[i] if len(args) > i else kwargs.get(k) for i, k in
                  ((1, "running_mean"), (3, "weight"), (2, "running_var"), (4, "bias"))]
        owner = next((o for o in map(self._owner, params) if o is not None), None)
        gin = self.ensure(x, "a batch norm")
        if owner is None or self.kinds.get(owner[0]) != "bn":
            what = f"batch norm '{owner[0]}' (not converted)" if owner else "a functional batch_norm"
            self.fix(gin, f"passes {what}")
            self.assign(out, gin)
            return
        name = owner[0]
        if id(x) in self.produced_by:
            self.normed.add(self.produced_by[id(x)])
        if x.dim() != 4:
            raise ValueError(f"cannot convert batch norm '{name}': it normalises a {x.dim()}-D input; hybrid batch "
                             f"norms support (N, C, H, W). Exclude it with filter_fn=lambda module, name: "
                             f"name != '{name}'")
        self.nodes[self.find(gin)].norms.append(name)
        self.assign(out, gin, id(x) in self.pooled)
        self._call(name, "bn", gin, gin)


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
        if kind == "linear" and not OP_TABLE[override].linear:
            raise ValueError(f"op_overrides gives linear layer '{name}' op={override!r}; linear layers support "
                             f"{', '.join(map(repr, linear_op_values()))}")
        return override
    if role == "first" and config.keep_first_conv_mult:
        return "mult"
    if role == "output" and config.keep_classifier_mult:
        return "mult"
    if kind == "linear":
        return "mult" if config.op == "mult" else "shift"
    if OP_TABLE[config.op].has_adder and not normed:
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
    for name, module in model.named_modules():
        kind = layer_kind(name, module, table) if filter_fn is None or filter_fn(module, name) else None
        if kind is None and filter_fn is not None and (type(module) in table or isinstance(module, GUARDED_BASES)):
            excluded.append(name)
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            owners.setdefault(id(tensor), (name, module))
        if kind is not None:
            kinds[name] = kind

    example_input = _default_example_input(model) if example_input is None else example_input
    forward = _default_forward if forward_fn is None else forward_fn
    tracer = _GroupTracer(owners, kinds)
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


def _siblings(node: _Node, kernel: dict[str, tuple[int, ...]]) -> bool:
    """One dense producer and 1x1 project consumer(s) (pooled squeeze-excite readers aside) in the same block."""
    producer = node.producers[0]
    project = [n for n, pooled in node.consumers if not pooled]
    return bool(project) and _parent(producer) != "" and all(
        kernel.get(n) == (1, 1) and _parent(n) == _parent(producer) and n != producer for n in project)


def _build_plan(tracer: _GroupTracer, config: ConvertConfig, kinds: dict[str, str],
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
