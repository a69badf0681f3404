"""``count_ops``: per-layer multiplications / additions / shifts, parameters, peak activation memory and energy
(docs/algorithms.md §8) of any ``nn.Module`` -- timm models, mmseg segmentors, hybrid and exported MF networks.

Counting runs one forward pass with forward hooks on the modules that have a cost rule (``rules.DEFAULT_RULES``,
looked up by exact type), so actual input/output shapes are used (sliced hybrid widths, dynamic padding, any
input size). Modules without a rule are never silently treated as free: executed leaf modules (and modules
holding parameters of their own) without a rule are listed in ``CostReport.uncounted`` and a
``CostModelWarning`` is emitted; register a rule with ``register_cost_rule``.

Peak activation memory is the largest ``input + output`` of one executed layer (MCUNet's per-layer definition;
buffers kept alive for residual branches are not included), at the layer's activation bit width.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..functional.adder import eager_adders
from ..modes import Mode, set_mode
from .energy import DEFAULT_ENERGY_TABLE, PRECISION_BITS, EnergyTable, check_precision
from .rules import (
    DEFAULT_RULES,
    CostContext,
    CostRule,
    LayerEstimate,
    OpCounts,
    Rule,
    type_key,
)

__all__ = ["CostModelWarning", "CostReport", "LayerCost", "count_ops", "register_cost_rule"]

_USER_RULES: dict[str, CostRule] = {}


class CostModelWarning(UserWarning):
    """Some executed modules could not be counted (see ``CostReport.uncounted``)."""


def register_cost_rule(cls: type | str, fn: Rule, *, counts_children: bool = False) -> None:
    """Register (or replace) the cost rule of a module type, matched by exact type.

    ``fn(module, x, y, ctx) -> LayerEstimate | None`` sees the first input tensor and the first output tensor of
    one call; ``counts_children=True`` keeps counting the module's sub-modules with their own rules."""
    if not callable(fn):
        raise TypeError(f"cost rule must be callable fn(module, x, y, ctx), got {type(fn).__name__}")
    if isinstance(cls, str):
        key = cls
    elif isinstance(cls, type) and issubclass(cls, nn.Module):
        key = type_key(cls)
    else:
        raise TypeError(f"register_cost_rule needs an nn.Module subclass or a 'module.QualName' string, got {cls!r}")
    _USER_RULES[key] = CostRule(fn, counts_children)


def _rule_for(module: nn.Module) -> CostRule | None:
    key = type_key(type(module))
    return _USER_RULES.get(key) or DEFAULT_RULES.get(key)


@dataclass
class LayerCost:
    """One row of the report: a module (all its calls summed)."""

    name: str
    type: str
    op: str
    input_shape: list[int]
    output_shape: list[int]
    mults: int
    adds: int
    shifts: int
    macs: int
    params: int
    param_bits: int
    weight_bits: list[int]
    act_bits: int
    energy_pj: float
    calls: int = 1
    mf_layer: bool = False
    note: str = ""

    @property
    def multiplicative(self) -> bool:
        """Does the layer perform any multiplication?"""
        return self.mults > 0


@dataclass
class CostReport:
    """Result of ``count_ops``; totals are sums over ``layers``."""

    layers: list[LayerCost]
    input_shape: list[int]
    precision: str
    bn: str
    energy_table: dict[str, dict[str, float]]
    model_params: int  #: every stored parameter of the model (unique tensors)
    peak_activation_bytes: int
    peak_activation_layer: str
    uncounted: list[str] = field(default_factory=list)  #: executed modules without a cost rule
    not_executed: list[str] = field(default_factory=list)  #: modules with parameters that never ran

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def mults(self) -> int:
        return self._sum("mults")

    @property
    def adds(self) -> int:
        return self._sum("adds")

    @property
    def shifts(self) -> int:
        return self._sum("shifts")

    @property
    def macs(self) -> int:
        """MAC positions of conv / linear-like layers (equal to the usual MAC count for multiplicative models)."""
        return self._sum("macs")

    @property
    def params(self) -> int:
        """Parameters used by the executed layers (hybrid layers: the active slice)."""
        return self._sum("params")

    @property
    def param_bytes(self) -> float:
        """Storage of the used parameters at their bit widths."""
        return self._sum("param_bits") / 8

    @property
    def energy_pj(self) -> float:
        return float(sum(layer.energy_pj for layer in self.layers))

    @property
    def multiplicative_layers(self) -> list[str]:
        """Names of the layers that perform multiplications."""
        return [layer.name for layer in self.layers if layer.multiplicative]

    def layer(self, name: str) -> LayerCost:
        """The row of module ``name``; ``KeyError`` listing close names otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no counted layer named {name!r}; counted: {[layer.name for layer in self.layers][:20]} ...")

    def totals(self) -> dict[str, Any]:
        """Total counts as a plain dict."""
        return {
            "mults": self.mults, "adds": self.adds, "shifts": self.shifts, "macs": self.macs,
            "params": self.params, "model_params": self.model_params, "param_bytes": self.param_bytes,
            "peak_activation_bytes": self.peak_activation_bytes, "peak_activation_layer": self.peak_activation_layer,
            "energy_pj": self.energy_pj, "energy_uj": self.energy_pj * 1e-6,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (settings, totals, per-layer rows, uncounted / not executed modules)."""
        return {
            "input_shape": self.input_shape, "precision": self.precision, "bn": self.bn,
            "energy_table_pj": self.energy_table, "totals": self.totals(),
            "multiplicative_layers": self.multiplicative_layers,
            "uncounted": self.uncounted, "not_executed": self.not_executed,
            "layers": [{**asdict(layer), "multiplicative": layer.multiplicative} for layer in self.layers],
        }


# ------------------------------------------------------------------------------------------------ walking


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, CostRule | None]]:
    """``(name, module, rule)`` of every module to hook: modules with a rule (and their descendants only when the
    rule says ``counts_children``), plus modules without a rule that are leaves or own parameters."""
    rule = _rule_for(module)
    if rule is not None:
        yield prefix, module, rule
        if not rule.counts_children:
            return
    else:
        is_leaf = next(module.children(), None) is None
        owns_params = next(module.parameters(recurse=False), None) is not None
        if is_leaf or owns_params:
            yield prefix, module, None
    for child_name, child in module.named_children():
        yield from _walk(child, f"{prefix}.{child_name}" if prefix else child_name)


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        items: Sequence[Any] = obj
    elif isinstance(obj, dict):
        items = list(obj.values())
    else:
        items = [getattr(obj, n) for n in ("last_hidden_state", "logits") if hasattr(obj, n)]
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _uncounted_estimate(module: nn.Module, ctx: CostContext) -> LayerEstimate:
    n = sum(int(p.numel()) for p in module.parameters(recurse=False))
    return LayerEstimate(
        op="UNCOUNTED", counts=OpCounts(), params=n, param_bits=n * ctx.precision_bits, act_bits=ctx.precision_bits,
        note=f"no cost rule for {type_key(type(module))}: ops NOT counted (register_cost_rule)",
    )


def _default_forward(model: nn.Module) -> Callable[[nn.Module, torch.Tensor], Any]:
    """``model(x)``; mmengine models (EncoderDecoder ...) whose forward takes ``mode``: ``model(x, mode='tensor')``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "mode" in params:
        return lambda m, x: m(x, mode="tensor")
    return lambda m, x: m(x)


def _make_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints such as (3, 32, 32), got {input_shape!r}")
    shape = [int(s) for s in input_shape]
    if any(s <= 0 for s in shape) or len(shape) < 1:
        raise ValueError(f"input_shape must be positive ints, e.g. (3, 32, 32) or (1, 3, 32, 32); got {input_shape!r}")
    if len(shape) == 3:  # C, H, W -> one image
        shape = [1, *shape]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def _run_on(run: Callable[[nn.Module, torch.Tensor], Any], model: nn.Module, x: torch.Tensor) -> None:
    """Run the model once; an input it cannot take (channels, too small a size) is a ``ValueError`` saying so. Adder
    layers run eagerly: only shapes matter here, and compiling each adder shape would cost minutes."""
    try:
        with eager_adders():
            run(model, x)
    except RuntimeError as err:
        if str(err).startswith("cost rule for "):
            raise
        raise ValueError(f"the model does not run on an input of shape {tuple(x.shape)}: {err}. Check input_shape="
                         "(C, H, W): C must be the model's input channels (in_chans) and H, W large enough for "
                         "its strides and kernels") from err


def count_ops(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    inputs: torch.Tensor | None = None,
    precision: str = "fp32",
    energy_table: EnergyTable | dict[str, dict[str, float]] | None = None,
    bn: str = "folded",
    mode: Mode | str | None = None,
    forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    warn: bool = True,
) -> CostReport:
    """Count multiplications, additions and shifts per layer and in total, with parameters (and bit widths),
    peak activation memory and the energy estimate (docs/algorithms.md §8; conventions in
    ``shiftaddaug_plugin.cost.rules``).

    Args:
        model: any module; run once in eval mode under ``torch.no_grad`` (training flags restored afterwards).
        input_shape: ``(C, H, W)`` (one image) or the full input shape with batch; counts cover the whole batch.
        inputs: a ready input tensor instead of ``input_shape``.
        precision: energy column and bit width of non-shift layers: ``'fp32'`` | ``'int32'`` | ``'int8'`` (or a
            column added to ``energy_table``).
        energy_table: an ``EnergyTable`` or overrides ``{precision: {'mult'|'add'|'shift': pJ}}`` of the default.
        bn: ``'folded'`` (BatchNorm costs 0 ops) or ``'unfolded'`` (1 mult + 1 add per element).
        mode: set hybrid layers to this ``Mode`` while counting (restored afterwards); ``None`` keeps their modes.
        forward_fn: ``fn(model, x)`` to run the model; default ``model(x)``, or ``model(x, mode='tensor')`` for
            mmengine models (mmseg ``EncoderDecoder``).
        warn: emit a ``CostModelWarning`` when executed modules have no cost rule.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_ops needs an nn.Module, got {type(model).__name__}")
    if isinstance(energy_table, dict):
        table = DEFAULT_ENERGY_TABLE.override(energy_table)
    elif energy_table is None:
        table = DEFAULT_ENERGY_TABLE
    elif isinstance(energy_table, EnergyTable):
        table = energy_table
    else:
        raise TypeError(f"energy_table must be an EnergyTable or a dict of overrides, got "
                        f"{type(energy_table).__name__}")
    precision = check_precision(precision, table.columns)
    if bn not in ("folded", "unfolded"):
        raise ValueError(f"bn must be 'folded' (BatchNorm costs 0 ops) or 'unfolded' (1 mult + 1 add per element), "
                         f"got {bn!r}")
    if (inputs is None) == (input_shape is None):
        raise ValueError("give exactly one of input_shape=(C, H, W) or inputs=<tensor>")
    x = inputs if inputs is not None else _make_input(model, input_shape)  # type: ignore[arg-type]
    run = forward_fn or _default_forward(model)

    ctx = CostContext(precision_bits=PRECISION_BITS.get(precision, 32), fold_bn=bn == "folded")
    rows: dict[str, LayerCost] = {}
    uncounted: list[str] = []
    executed: set[int] = set()
    peak = [0, ""]
    order: dict[str, int] = {}
    state = {"prev_mf": False}

    def make_pre_hook(name: str) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: tuple) -> None:
            order.setdefault(name, len(order))  # rows in call-start order (a container before its children)

        return pre_hook

    def make_hook(name: str, rule: CostRule | None) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            executed.add(id(module))
            x_in = _first_tensor(args) if args else None
            if x_in is None:
                x_in = _first_tensor(kwargs)
            y_out = _first_tensor(output)
            call_ctx = CostContext(ctx.precision_bits, ctx.fold_bn, state["prev_mf"])
            if rule is None:
                est: LayerEstimate | None = _uncounted_estimate(module, call_ctx)
                if name not in uncounted:
                    uncounted.append(name)
            elif x_in is None or y_out is None:
                raise TypeError(
                    f"cost rule for {name!r} ({type_key(type(module))}) needs a tensor input and output; this call "
                    "had none -- pass forward_fn= or register a rule for the enclosing module"
                )
            else:
                try:
                    est = rule.fn(module, x_in, y_out, call_ctx)
                except (ValueError, TypeError):
                    raise
                except Exception as err:  # a formula bug: say where
                    raise RuntimeError(f"cost rule for {name!r} ({type_key(type(module))}) failed: {err}") from err
            if est is None:
                return
            if est.counts.macs:  # remember whether the last conv/linear-like layer was MF (BN-folding note)
                state["prev_mf"] = est.mf_layer
            in_shape = list(x_in.shape) if x_in is not None else []
            out_shape = list(y_out.shape) if y_out is not None else []
            act_bytes = ((x_in.numel() if x_in is not None else 0) + (y_out.numel() if y_out is not None else 0))
            act_bytes = act_bytes * est.act_bits // 8
            if not est.in_place and act_bytes > peak[0]:
                peak[0], peak[1] = act_bytes, name
            c = est.counts
            energy = table.energy_pj(c.mults, c.adds, c.shifts, precision)
            row = rows.get(name)
            if row is None:
                rows[name] = LayerCost(
                    name=name, type=type(module).__name__, op=est.op, input_shape=in_shape, output_shape=out_shape,
                    mults=c.mults, adds=c.adds, shifts=c.shifts, macs=c.macs, params=est.params,
                    param_bits=est.param_bits, weight_bits=list(est.weight_bits), act_bits=est.act_bits,
                    energy_pj=energy, mf_layer=est.mf_layer, note=est.note,
                )
            else:  # called again (shared module): add its ops, keep the parameter count
                row.calls += 1
                row.mults += c.mults
                row.adds += c.adds
                row.shifts += c.shifts
                row.macs += c.macs
                row.energy_pj += energy
                row.params = max(row.params, est.params)
                row.param_bits = max(row.param_bits, est.param_bits)

        return hook

    targets = [(n or f"({type(m).__name__})", m, r) for n, m, r in _walk(model)]
    handles = [m.register_forward_hook(make_hook(n, r), with_kwargs=True) for n, m, r in targets]
    handles += [m.register_forward_pre_hook(make_pre_hook(n)) for n, m, _ in targets]
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            if mode is not None:
                with set_mode(model, mode):
                    _run_on(run, model, x)
            else:
                _run_on(run, model, x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in training:
            m.training = flag

    not_executed = [
        n for n, m, _ in targets if id(m) not in executed and next(m.parameters(), None) is not None
    ]
    if uncounted and warn:
        warnings.warn(
            f"count_ops: {len(uncounted)} executed module(s) have no cost rule and were NOT counted: "
            f"{uncounted[:10]}{' ...' if len(uncounted) > 10 else ''}; see CostReport.uncounted and add a rule with "
            "shiftaddaug_plugin.cost.register_cost_rule(cls, fn)",
            CostModelWarning,
            stacklevel=2,
        )
    seen: set[int] = set()
    model_params = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            model_params += int(p.numel())
    return CostReport(
        layers=sorted(rows.values(), key=lambda row: order.get(row.name, len(order))), input_shape=list(x.shape),
        precision=precision, bn=bn,
        energy_table=table.to_dict(), model_params=model_params, peak_activation_bytes=int(peak[0]),
        peak_activation_layer=str(peak[1]), uncounted=uncounted, not_executed=not_executed,
    )
