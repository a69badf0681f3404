"""Channel re-sorting of mid channels by importance: the weight-sharing step of NetAug and ShiftAddAug.

Importance of mid channel ``c`` of an inverted-residual block: ``sum |W_project[:, c]|`` (L1 norm of the project
conv's input column, summed over the group's project convs). Two scopes (:class:`SortScope`):

* ``all`` (default, the paper's and NetAug's rule): all ``max`` mid channels are ranked and the ``n`` most important
  move into the target slice ``[:n]``, the rest follow in decreasing order. This is what shares the augmented
  network's knowledge with the target ("re-ordered into the target part", ShiftAddAug §3.2): a channel that the
  augmented network trained **multiplicatively** becomes a target channel computed by the multiplication-free
  operator, and a target channel that lost importance leaves it.
* ``augmented``: the target channels stay in place and only ``[n:max]`` is sorted; invisible to the target network.

Heterogeneous weight sharing at the move (ShiftAddAug eq. 5): in an adder layer the stored weights play two roles,
the adder-only block (``W[:O_t, :I_t]``, depthwise ``W[:C_t]``, read by ``-|x - w|``; Laplacian, scale ~1 after the
AdderNet N(0, 1) initialisation) and everything else (read by multiplication; Gaussian, scale ~0.1). An entry that
crosses the boundary is quantile-matched to the distribution of its new role (``remap_moved=True``, default):
entering the adder block ``r(w) = F_Laplace(mu_a, b_a)^-1(Phi((w - mu_m) / sigma_m))``, leaving it the inverse, with
``(mu_a, b_a)`` the Laplace fit of that layer's current adder block (prior knowledge of what the adder has learnt)
and ``(mu_m, sigma_m)`` the Gaussian fit of its multiplicative entries, both taken before the move. The maps are
monotone, so every weight keeps its rank. Shift layers need no remap: power-of-two rounding reads multiplicative
weights at their own scale. Ranking compares channels in one domain: for adder project convs the adder block is
first mapped into the multiplicative domain (the inverse map), so an adder column is not "important" merely for its
larger scale.

Everything indexed by a mid channel is permuted in place (``.data`` of the same ``Parameter`` objects, so optimizers
and DDP keep working): producer convs' output rows and biases, depthwise conv weights and biases, batch norm affine
parameters and running statistics, consumer convs' input columns; the optimizer state tensors of those parameters
are permuted alike (first-moment buffers of remapped entries rescaled by the scale ratio, second moments by its
square), and so is an EMA copy (remapped with its own statistics). The result is a deterministic function of the
weights, so DDP ranks holding identical weights take identical decisions. Block outputs are never permuted.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..functional.distribution import (
    gauss_scale,
    gauss_to_laplace_matched,
    laplace_scale,
    laplace_to_gauss_matched,
)
from ..modes import ChoiceEnum
from ..protocol import unwrap
from .plan import ChannelGroup, planned_root

__all__ = ["SortScope", "sort_channels", "mid_channel_importance", "adder_block_mask"]

#: optimizer-state keys of second-moment buffers (rescaled by the squared scale ratio of a remapped entry)
SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum")


class SortScope(ChoiceEnum):
    """Which mid channels :func:`sort_channels` ranks."""

    ALL = "all"  #: every mid channel; the most important move into the target slice (paper, NetAug)
    AUGMENTED = "augmented"  #: only the augmented channels; the target slice stays fixed

    @classmethod
    def _label(cls) -> str:
        return "sort scope"


def adder_block_mask(module: nn.Module) -> Tensor | None:
    """Boolean mask of ``module.weight`` entries read by the target's adder (``None``: the layer has no adder block:
    not a hybrid adder layer, or its target is multiplicative now, ``mf_enabled=False``)."""
    if getattr(module, "op", None) != "adder" or not getattr(module, "mf_enabled", False):
        return None
    weight = module.weight
    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    o_t = module.target_out_channels
    if getattr(module, "depthwise", False):
        mask[:o_t] = True
    else:
        mask[:o_t, : module.target_in_channels] = True
    return mask


def _domain_stats(weight: Tensor, mask: Tensor) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((mu_a, b_a) Laplace fit of the adder block, (mu_m, sigma_m) Gaussian fit of the rest), or ``None``."""
    if int(mask.sum()) < 2 or int((~mask).sum()) < 2:
        return None
    return laplace_scale(weight[mask]), gauss_scale(weight[~mask])


def _importance_view(module: nn.Module) -> Tensor:
    """The project conv's weight with its adder block mapped into the multiplicative domain (module docstring)."""
    w = module.weight.detach()
    mask = adder_block_mask(module)
    stats = None if mask is None else _domain_stats(w, mask)
    if stats is None:
        return w
    (mu_a, b_a), (mu_m, sigma_m) = stats
    view = w.clone()
    view[mask] = laplace_to_gauss_matched(w[mask], mu_a, b_a, mu_m, sigma_m)
    return view


def mid_channel_importance(root: nn.Module, group: ChannelGroup) -> Tensor:
    """``importance[c] = sum over project convs of sum |W[:, c]|`` for all ``max_channels`` channels of ``group``
    (adder blocks seen in the multiplicative domain, module docstring)."""
    total = None
    for name in group.project:
        w = _importance_view(root.get_submodule(name))
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


def _ema_module(ema: Any) -> nn.Module | None:
    if ema is None:
        return None
    inner = unwrap(ema) if isinstance(ema, nn.Module) else getattr(ema, "module", ema)  # timm EMA: .module
    if not isinstance(inner, nn.Module):
        raise TypeError("ema must be an nn.Module or have an nn.Module .module (timm ModelEmaV3), got "
                        f"{type(ema).__name__}")
    return inner


def _permute_weight(module: nn.Module, tensor: Tensor, attr: str, dim: int, perm: Tensor, remap: bool,
                    state: dict[str, Any] | None) -> int:
    """Permute ``tensor`` along ``dim``; quantile-match the entries that crossed the adder-block boundary.
    ``state``: the optimizer state of ``tensor`` (permuted alike). Returns the number of remapped entries."""
    perm = perm.to(tensor.device)
    mask = adder_block_mask(module) if (remap and attr == "weight") else None
    stats = None if mask is None else _domain_stats(tensor.data, mask)
    tensor.data.copy_(tensor.data.index_select(dim, perm))
    moved: list[tuple[Tensor, float]] = []  # (entries, scale ratio new/old)
    if stats is not None:
        (mu_a, b_a), (mu_m, sigma_m) = stats
        was_adder = mask.index_select(dim, perm)  # old role of the entry now at each position
        entering, leaving = mask & ~was_adder, ~mask & was_adder
        if entering.any():
            tensor.data[entering] = gauss_to_laplace_matched(tensor.data[entering], mu_m, sigma_m, mu_a, b_a)
            moved.append((entering, b_a / sigma_m))
        if leaving.any():
            tensor.data[leaving] = laplace_to_gauss_matched(tensor.data[leaving], mu_a, b_a, mu_m, sigma_m)
            moved.append((leaving, sigma_m / b_a))
    for key, value in (state or {}).items():
        if isinstance(value, Tensor) and value.shape == tensor.shape:
            value.copy_(value.index_select(dim, perm))
            power = 2 if key in SECOND_MOMENTS else 1
            for where, ratio in moved:
                value[where] *= ratio ** power
    return sum(int(where.sum()) for where, _ in moved)


@torch.no_grad()
def sort_channels(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None, ema: Any = None, *,
    scope: SortScope | str = SortScope.ALL, remap_moved: bool = True, stats: dict[str, int] | None = None,
) -> dict[int, Tensor]:
    """Sort the mid channels of every inverted-residual block in place by importance (module docstring).

    Args:
        model: a converted model (or its DDP wrapper).
        optimizer: its optimizer; state tensors shaped like a permuted parameter are permuted alike.
        ema: an EMA copy with the same structure (``nn.Module`` or timm ``ModelEmaV3``): permuted alike.
        scope: ``'all'`` (rank every mid channel, the most important move into the target) or ``'augmented'``.
        remap_moved: quantile-match weights that cross an adder block's boundary (eq. 5 at the move).
        stats: if given, filled with ``channels_moved`` (channels that entered a target slice) and
            ``entries_remapped`` (weight entries quantile-matched, live model only).

    Returns ``{group id: permutation of range(max_channels)}`` for the groups whose order changed.
    """
    scope = SortScope.parse(scope)
    root, plan = planned_root(model)
    ema_root = _ema_module(ema)
    changed: dict[int, Tensor] = {}
    moved_channels = remapped = 0
    for gid, group in plan.groups.items():
        if group.kind != "mid" or not group.widened or not group.project:
            continue
        n = group.channels
        imp = mid_channel_importance(root, group)
        if scope is SortScope.ALL:
            perm = torch.argsort(imp, descending=True, stable=True).cpu()
        else:
            perm = torch.cat([torch.arange(n), (torch.argsort(imp[n:], descending=True, stable=True) + n).cpu()])
        if torch.equal(perm, torch.arange(group.max_channels)):
            continue
        changed[gid] = perm
        moved_channels += int((perm[:n] >= n).sum())
        for name, attr, dim in _targets(group):
            module = root.get_submodule(name)
            tensor = getattr(module, attr, None)
            if tensor is None:
                continue
            state = optimizer.state.get(tensor) if optimizer is not None and isinstance(tensor, nn.Parameter) else None
            if ema_root is not None:
                twin_module = ema_root.get_submodule(name)
                twin = getattr(twin_module, attr, None)
                if twin is None or twin.shape != tensor.shape:
                    raise ValueError(f"EMA copy has no tensor '{name}.{attr}' shaped {tuple(tensor.shape)}; pass "
                                     "an EMA made from the converted model (e.g. timm ModelEmaV3(model))")
                _permute_weight(twin_module, twin, attr, dim, perm, remap_moved, None)
            remapped += _permute_weight(module, tensor, attr, dim, perm, remap_moved, state)
    if stats is not None:
        stats.update(channels_moved=moved_channels, entries_remapped=remapped)
    return changed
