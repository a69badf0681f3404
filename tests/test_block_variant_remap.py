"""Eq. 5 at a block-variant switch: an adder layer's multiplicatively trained target block is quantile-matched onto
the adder prior Laplace(0, s / sqrt(2)) exactly once, at the step it turns MF, identically after a resume."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import stats
from torch import nn

from shiftaddaug_plugin.block_variant import BlockVariantSchedule, remap_switched_adder, switch_diagnostics
from shiftaddaug_plugin.convert import ConvertConfig, convert


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def _adder_net() -> nn.Module:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
    net = convert(dense, ConvertConfig(op="adder", keep_first_conv_mult=False, aug_width_mult_list=[1.0, 1.5]),
                  example_input=torch.randn(1, 3, 8, 8))
    with torch.no_grad():  # as after multiplicative training: small Gaussian target blocks
        for m in net.modules():
            if hasattr(m, "mf_enabled"):
                m.weight.normal_(0.02, 0.1)
    return net


def _block(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach()[: layer.target_out_channels, : layer.target_in_channels].clone()


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if hasattr(m, "mf_enabled")]


def test_remap_maps_the_block_onto_the_adder_prior_and_keeps_ranks() -> None:
    net = _adder_net()
    layer = _layers(net)[1]
    before = _block(layer)
    rest_before = layer.weight.detach()[layer.target_out_channels:].clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt.state[layer.weight]["momentum_buffer"] = torch.ones_like(layer.weight)
    b = 1.0 / math.sqrt(2.0)
    assert remap_switched_adder(layer, b, opt) == before.numel()
    after = _block(layer)
    # independent reference in float64: Laplace(0, b) quantile of the Gaussian fit's CDF value
    x = before.double().numpy().ravel()
    ref = stats.laplace.ppf(stats.norm.cdf(x, loc=x.mean(), scale=x.std(ddof=1)), loc=0.0, scale=b)
    torch.testing.assert_close(after.double().ravel(), torch.from_numpy(ref), rtol=1e-4, atol=1e-5)
    order = torch.argsort(before.ravel())
    assert (after.ravel()[order].diff() >= 0).all()  # monotone: every weight keeps its rank
    assert torch.equal(layer.weight.detach()[layer.target_out_channels:], rest_before)  # augmented rows untouched
    ratio = b / float(before.double().std())
    mom = opt.state[layer.weight]["momentum_buffer"]
    torch.testing.assert_close(mom[: layer.target_out_channels, : layer.target_in_channels],
                               torch.full_like(after, ratio))
    assert (mom[layer.target_out_channels:] == 1).all()


def test_switch_remaps_once_at_the_switch_step_and_resume_agrees() -> None:
    net = _adder_net()
    sched = BlockVariantSchedule(net, start=0, end=3, unit="epoch")
    layers = _layers(net)
    seen = []
    for step in range(5):
        snapshot = [_block(m) for m in layers]
        sched.apply(step)
        changed = [not torch.equal(s, _block(m)) for s, m in zip(snapshot, layers)]
        seen.append(changed)
        once = [_block(m) for m in layers]
        sched.apply(step)  # a second call of the same step (a hook called twice) remaps nothing more
        assert all(torch.equal(_block(m), a) for m, a in zip(layers, once))
        if step == 1:
            resumed = copy.deepcopy(net)  # a checkpoint written after step 1; its flags come back from apply()
    # 3 switchable layers over 3 epochs: one switches at each of steps 1, 2, 3; each block is remapped once
    assert [sum(c) for c in seen] == [0, 1, 1, 1, 0]
    assert [c.index(True) for c in seen if any(c)] == [0, 1, 2]

    fresh = BlockVariantSchedule(resumed, start=0, end=3, unit="epoch")
    for m in _layers(resumed):
        m.mf_enabled = True  # a rebuilt model before the schedule sets its flags
    for step in range(2, 5):
        fresh.apply(step)
    for a, b in zip(_layers(net), _layers(resumed)):
        assert torch.equal(a.weight, b.weight) and a.mf_enabled == b.mf_enabled


def test_no_remap_keeps_the_weights_and_shift_layers_are_never_remapped() -> None:
    net = _adder_net()
    before = [m.weight.detach().clone() for m in _layers(net)]
    sched = BlockVariantSchedule(net, start=0, end=3, unit="epoch", remap=False)
    for step in range(5):
        sched.apply(step)
    assert all(torch.equal(b, m.weight) for b, m in zip(before, _layers(net)))
    torch.manual_seed(0)
    shift = convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), ConvertConfig(op="shift",
                    keep_first_conv_mult=False), example_input=torch.randn(1, 3, 8, 8))
    w = shift[0].weight.detach().clone()
    assert remap_switched_adder(shift[0], 0.7) == 0 and torch.equal(w, shift[0].weight)
    with pytest.raises(ValueError, match="adder_prior_std"):
        BlockVariantSchedule(net, start=0, end=3, adder_prior_std=0.0)


def test_switch_diagnostics_measure_both_variants_on_copies() -> None:
    """What a switching adder reads: the remapped block at the prior's scale (E|Laplace(0, b)| = b), the unmapped
    block at its multiplicative scale; the scheduled model itself is not touched."""
    net = nn.Sequential(_adder_net(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # logits (N, 16)
    schedule = BlockVariantSchedule(net, start=0, end=3, unit="epoch")  # 3 layers: one switches per epoch
    schedule.apply(1)  # layer 0 is MF from epoch 1 on
    with torch.no_grad():  # as if trained as an adder: larger weights than the Gaussian blocks
        _layers(net)[0].weight.mul_(20.0)
    state = copy.deepcopy(net.state_dict())
    images, targets = torch.randn(16, 3, 8, 8), torch.randint(0, 16, (16,))
    diag = switch_diagnostics(schedule, 2, images, targets)
    assert diag is not None and diag["switching"] == schedule.unit_names()[1]
    b = 1.0 / math.sqrt(2.0)
    block = _block(_layers(net)[1])
    assert diag["remap"]["mean_abs"] == pytest.approx(b, rel=0.15)
    assert diag["no_remap"]["mean_abs"] == pytest.approx(float(block.abs().mean()), rel=1e-6)
    assert diag["remap"]["kurtosis"] > diag["no_remap"]["kurtosis"] + 1.0  # Laplace (3) vs Gaussian (0)
    assert diag["already_mf"]["layers"] == 1
    assert diag["already_mf"]["mean_abs"] == pytest.approx(float(_block(_layers(net)[0]).abs().mean()), rel=1e-6)
    assert {"target_loss", "target_acc", "channel_corr"} <= set(diag["remap"])
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # copies only
    assert [layer.mf_enabled for layer in _layers(net)] == [True, False, False]
    assert switch_diagnostics(schedule, 5, images, targets) is None  # nothing switches after the end
