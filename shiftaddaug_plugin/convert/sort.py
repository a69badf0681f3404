"""Channel re-sorting of augmented mid channels (DESIGN §2.4, NetAug).

Importance of mid channel ``c`` of an inverted-residual block: ``sum |W_project[:, c]|`` (L1 norm of the project
conv's input slice, summed over the group's project convs). The **augmented** channels ``[n:max]`` of every mid
group are sorted by decreasing importance, so that narrower sampled widths keep the most important ones.

Choice: the target channels ``[:n]`` stay where they are. Unlike NetAug (whose target is a multiplicative slice of
the same operator), ShiftAddAug's target channels compute with a multiplication-free operator; moving a
multiplicatively trained channel into the target slice would change the target network. Keeping them fixed makes
sorting invisible to the target network (bit-identical outputs) and keeps the widest augmented network's function
unchanged up to float summation order. Block outputs (residual streams) are never permuted.

Everything indexed by a mid channel is permuted in place (``.data`` of the same ``Parameter`` objects, so optimizers
and DDP keep working): producer convs' output rows and biases (expand conv, squeeze-excite expand conv), depthwise
conv weights and biases, batch norm affine parameters and running statistics, consumer convs' input columns
(project conv, squeeze-excite reduce conv); the same permutation is applied to the optimizer state tensors of
those parameters (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ...) and to an EMA copy. Per-layer weight remaps
(eq. 5) and the shift-add composite's adder weight only act on target channels, so they are unaffected.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .plan import ChannelGroup, planned_root

__all__ = ["sort_channels", "mid_channel_importance"]


def mid_channel_importance(root: nn.Module, group: ChannelGroup) -> Tensor:
    """``importance[c] = sum over project convs of sum |W[:, c]|`` for all ``max_channels`` channels of ``group``."""
    total = None
    for name in group.project:
        w = root.get_submodule(name).weight.detach()
        dims = tuple(d for d in range(w.dim()) if d != 1)
        imp = w.abs().sum(dim=dims).to(torch.float64)
        total = imp if total is None else total + imp
    if total is None:
        raise ValueError(f"channel group {group.gid} has no project conv to rank its channels by")
    return total


def _targets(group: ChannelGroup) -> list[tuple[str, str, int]]:
    """(module name, tensor attribute, dim) for every tensor indexed by the group's channels."""
    out: list[tuple[str, str, int]] = []
    for name in (*group.producers, *group.depthwise):
        out += [(name, "weight", 0), (name, "bias", 0)]
    for name in group.norms:
        out += [(name, "weight", 0), (name, "bias", 0), (name, "running_mean", 0), (name, "running_var", 0)]
    out += [(name, "weight", 1) for name in group.consumers]  # input columns (also of a conv mapping G onto G)
    return out


def _permute_(t: Tensor, dim: int, perm: Tensor) -> None:
    t.data.copy_(t.data.index_select(dim, perm.to(t.device)))


def _ema_module(ema: Any) -> nn.Module | None:
    if ema is None:
        return None
    inner = getattr(ema, "module", ema)  # timm ModelEmaV2/V3 keep the copy in .module
    if not isinstance(inner, nn.Module):
        raise TypeError("ema must be an nn.Module or have an nn.Module .module (timm ModelEmaV3), got "
                        f"{type(ema).__name__}")
    return inner


def sort_channels(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None, ema: Any = None
) -> dict[int, Tensor]:
    """Sort the augmented mid channels of every inverted-residual block in place (module docstring).

    Args:
        model: a converted model (or its DDP wrapper).
        optimizer: its optimizer; state tensors shaped like a permuted parameter are permuted alike.
        ema: an EMA copy with the same structure (``nn.Module`` or timm ``ModelEmaV3``): permuted alike.

    Returns ``{group id: permutation of range(max_channels)}`` for the groups whose order changed.
    """
    root, plan = planned_root(model)
    ema_root = _ema_module(ema)
    changed: dict[int, Tensor] = {}
    with torch.no_grad():
        for gid, group in plan.groups.items():
            if group.kind != "mid" or not group.widened or not group.project:
                continue
            n = group.channels
            imp = mid_channel_importance(root, group)
            order = torch.argsort(imp[n:], descending=True, stable=True) + n
            perm = torch.cat([torch.arange(n), order.cpu()])
            if torch.equal(perm, torch.arange(group.max_channels)):
                continue
            changed[gid] = perm
            for name, attr, dim in _targets(group):
                tensor = getattr(root.get_submodule(name), attr, None)
                if tensor is None:
                    continue
                _permute_(tensor, dim, perm)
                if optimizer is not None and isinstance(tensor, nn.Parameter):
                    for value in optimizer.state.get(tensor, {}).values():
                        if isinstance(value, Tensor) and value.shape == tensor.shape:
                            _permute_(value, dim, perm)
                if ema_root is not None:
                    twin = getattr(ema_root.get_submodule(name), attr, None)
                    if twin is None or twin.shape != tensor.shape:
                        raise ValueError(f"EMA copy has no tensor '{name}.{attr}' shaped {tuple(tensor.shape)}; pass "
                                         "an EMA made from the converted model (e.g. timm ModelEmaV3(model))")
                    _permute_(twin, dim, perm)
    return changed
