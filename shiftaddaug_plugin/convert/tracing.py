"""Channel tracing for the analysis: one forward pass under a ``TorchFunctionMode`` (docs/algorithms.md §3).

:class:`GroupTracer` sees every ``conv2d`` / ``batch_norm`` / ``linear`` / elementwise / ``cat`` / pooling / reshape
call, maps parameters back to module names and joins channel dimensions into groups with union-find; the rules are
listed in :mod:`.analysis`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["GroupTracer", "Node"]


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
class Node:
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


class GroupTracer(TorchFunctionMode):
    """Records channel groups during one forward pass (see the module docstring for the rules)."""

    def __init__(self, owners: dict[int, tuple[str, nn.Module]], kinds: dict[str, str]) -> None:
        super().__init__()
        self.owners = owners  # id(parameter or buffer) -> (module name, module)
        self.kinds = kinds  # convertible module name -> 'conv' | 'linear' | 'bn'
        self.nodes: list[Node] = []
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
        self.nodes.append(Node(size=size, parent=gid, fixed=[fixed] if fixed else []))
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
