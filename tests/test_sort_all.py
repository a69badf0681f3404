"""Sorting into the target (scope 'all') and the quantile-matching remap of weights that cross an adder block."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
scipy_stats = pytest.importorskip("scipy.stats")

from shiftaddaug_plugin import Mode, set_mode  # noqa: E402
from shiftaddaug_plugin.convert import ConvertConfig, convert, export, get_plan, set_max_widths, sort_channels  # noqa: E402
from shiftaddaug_plugin.convert.sort import SortScope, adder_block_mask, mid_channel_importance  # noqa: E402
from shiftaddaug_plugin.functional.distribution import (  # noqa: E402
    gauss_to_laplace_matched,
    laplace_scale,
    laplace_to_gauss_matched,
)


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")  # tiny shapes: no compilation in the tests


def _input(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _converted(op: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    dense = timm.create_model("test_efficientnet", num_classes=10).eval().to(dtype)
    model = convert(dense, ConvertConfig(op=op), example_input=_input(dtype=dtype))
    _make_augmented_important(model)
    return model


BOOST = 3.0


def _make_augmented_important(model: nn.Module) -> None:
    """Scale up a few augmented columns of every project conv so that they must move into the target."""
    plan = get_plan(model)
    with torch.no_grad():
        for group in plan.groups.values():
            if group.kind == "mid" and group.widened and group.project:
                n = group.channels
                for name in group.project:
                    model.get_submodule(name).weight[:, n: n + 2] *= BOOST


def _sgd_step(model: nn.Module, x: torch.Tensor) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    with set_mode(model, Mode.AUGMENTED):
        model(x).square().mean().backward()
    opt.step()
    return opt


# ---------------------------------------------------------------------------------------------- distribution maps
def test_quantile_maps_match_scipy_and_invert() -> None:
    w = torch.linspace(-3.0, 3.0, 101, dtype=torch.float64)
    mu_g, sigma_g, mu_l, b = 0.1, 0.7, -0.2, 1.3
    got = gauss_to_laplace_matched(w, mu_g, sigma_g, mu_l, b)
    ref = scipy_stats.laplace.ppf(scipy_stats.norm.cdf(w.numpy(), mu_g, sigma_g), mu_l, b)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)
    back = laplace_to_gauss_matched(got, mu_l, b, mu_g, sigma_g)
    np.testing.assert_allclose(back.numpy(), w.numpy(), rtol=1e-7, atol=1e-7)
    assert (got[1:] > got[:-1]).all()  # monotone: ranks are kept
    x = torch.distributions.Laplace(0.5, 2.0).sample((200_000,)).double()
    mu, scale = laplace_scale(x)
    assert abs(mu - 0.5) < 0.03 and abs(scale - 2.0) < 0.03
    with pytest.raises(ValueError, match="scale must be"):
        gauss_to_laplace_matched(w, 0.0, 0.0, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- scope 'all'
def test_sort_all_moves_most_important_into_target_mult_net_keeps_widest_function() -> None:
    """op='mult' in float64: a pure permutation, so the widest augmented net is unchanged while the target slice
    now holds the n most important channels (and the target network changes)."""
    x = _input(dtype=torch.float64)
    model = _converted("mult", torch.float64)
    set_max_widths(model)
    model.eval()
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        wide = model(x)
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        target = model(x)
    stats: dict[str, int] = {}
    perms = sort_channels(model, stats=stats)
    assert perms and stats["channels_moved"] > 0 and stats["entries_remapped"] == 0
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        assert (model(x) - wide).abs().max().item() < 1e-10
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        assert not torch.allclose(model(x), target)
    plan = get_plan(model)
    for gid in perms:
        imp = mid_channel_importance(model, plan.groups[gid])
        assert (imp[:-1] >= imp[1:]).all()  # all mid channels in decreasing importance, the target first
    assert sort_channels(model) == {}  # idempotent


def test_sort_scope_parse() -> None:
    assert SortScope.parse("ALL") is SortScope.ALL
    with pytest.raises(ValueError, match="unknown sort scope"):
        sort_channels(_converted("shift"), scope="target")


def test_sort_all_adder_remaps_crossing_entries_and_keeps_ema_ddp_export_consistent() -> None:
    x = _input()
    model = _converted("adder")
    opt = _sgd_step(model, x)
    ema = copy.deepcopy(model)
    rank1 = copy.deepcopy(model)  # a second DDP rank: identical weights must give identical decisions
    opt1 = torch.optim.SGD(rank1.parameters(), lr=1e-4, momentum=0.9)
    opt1.load_state_dict(copy.deepcopy(opt.state_dict()))
    plan = get_plan(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    moms = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    stats: dict[str, int] = {}
    perms = sort_channels(model, optimizer=opt, ema=ema, stats=stats)
    perms1 = sort_channels(rank1, optimizer=opt1)
    assert perms and stats["channels_moved"] > 0 and stats["entries_remapped"] > 0
    assert perms.keys() == perms1.keys() and all(torch.equal(perms[k], perms1[k]) for k in perms)
    for (k, v), (_, v1), (_, ve) in zip(model.state_dict().items(), rank1.state_dict().items(),
                                        ema.state_dict().items()):
        assert torch.equal(v, v1) and torch.equal(v, ve), k
    checked = 0
    for gid, perm in perms.items():
        group = plan.groups[gid]
        n = group.channels
        entered = [int(c) for c in perm[:n] if c >= n]
        if not entered:
            continue
        for name in group.project:  # project conv columns: dim 1
            layer = model.get_submodule(name)
            mask = adder_block_mask(layer)
            assert mask is not None
            w_old = before[f"{name}.weight"]
            o_t = layer.target_out_channels
            pos = int((perm == entered[0]).nonzero())
            old_col, new_col = w_old[:o_t, entered[0]], layer.weight.detach()[:o_t, pos]
            # entered the adder block: quantile-matched, so the same order but the adder block's scale
            assert (new_col.flatten()[torch.argsort(old_col.flatten())].diff() >= 0).all()
            old_mult = w_old[~mask]
            mu_m, sigma_m = float(old_mult.double().mean()), float(old_mult.double().std())
            mu_a, b_a = laplace_scale(w_old[mask])
            ref = gauss_to_laplace_matched(old_col, mu_m, sigma_m, mu_a, b_a)
            torch.testing.assert_close(new_col, ref)
            # untouched rows (augmented outputs) were only permuted, and their momentum with them
            w_new = layer.weight.detach()
            assert torch.equal(w_new[o_t:, pos], w_old[o_t:, entered[0]])
            assert torch.equal(opt.state[layer.weight]["momentum_buffer"][o_t:, pos],
                               moms[f"{name}.weight"][o_t:, entered[0]])
            # ... and a target channel that left the adder block is mapped back into the multiplicative domain
            left = [c for c in range(n) if c not in perm[:n].tolist()]
            pos_l = int((perm == left[0]).nonzero())
            torch.testing.assert_close(w_new[:o_t, pos_l],
                                       laplace_to_gauss_matched(w_old[:o_t, left[0]], mu_a, b_a, mu_m, sigma_m))
            checked += 1
    assert checked > 0
    model.eval()
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        y = model(x)
    with torch.no_grad():
        assert (export(model)(x) - y).abs().max().item() <= 1e-3 * max(1.0, y.abs().max().item())


def test_sort_all_no_remap_only_permutes() -> None:
    model = _converted("adder")
    values = {n: sorted(p.detach().flatten().tolist()) for n, p in model.named_parameters()}
    stats: dict[str, int] = {}
    assert sort_channels(model, remap_moved=False, stats=stats)
    assert stats["entries_remapped"] == 0 and stats["channels_moved"] > 0
    for n, p in model.named_parameters():  # a permutation keeps every tensor's multiset of values
        assert sorted(p.detach().flatten().tolist()) == values[n], n


def test_sort_diagnostics_show_remap_keeps_adder_scale() -> None:
    from shiftaddaug_plugin.convert.diagnostics import sort_diagnostics

    model = _converted("adder")
    x = _input()
    y = torch.tensor([1, 2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    diag = sort_diagnostics(model, x, y)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the model itself is untouched
    before, remap, plain = diag["before"], diag["sorted_remap"], diag["sorted_no_remap"]
    assert remap["channels_moved"] == plain["channels_moved"] > 0 and plain["entries_remapped"] == 0
    # without the remap, multiplicative-scale weights enter the adder blocks: mean |w| drops
    assert abs(remap["mean_abs"] - before["mean_abs"]) < abs(plain["mean_abs"] - before["mean_abs"])
    assert plain["mean_abs"] < before["mean_abs"]
    for d in (before, remap, plain):
        assert 0.0 <= d["channel_corr"] <= 1.0 and d["target_loss"] > 0 and d["layers"]
