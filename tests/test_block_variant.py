"""Block-variant schedule (docs/algorithms.md §6): exact MF layer sets per step, monotone, fully MF at the end,
validation."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftaddaug_plugin.block_variant import (
    BlockVariantSchedule,
    mf_count,
    mf_layers_at,
    schedule_progress,
    set_all_mf,
    switchable_layers,
    variant_units,
)
from shiftaddaug_plugin.layers.hybrid import HybridConv2d, HybridLinear
from shiftaddaug_plugin.modes import Mode, set_mode


def _conv(op: str = "shift", cin: int = 4, cout: int = 4) -> HybridConv2d:
    return HybridConv2d(cin, cout, 1, target_in_channels=cin, target_out_channels=cout, op=op)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_pw = _conv()
        self.conv_pwl = _conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(torch.relu(self.conv_pw(x)))


class _Net(nn.Module):
    """stem (kept 'mult', never switches) -> 2 blocks of 2 switchable convs -> pooled shift classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = _conv("mult")
        self.blocks = nn.Sequential(_Block(), _Block())
        self.classifier = HybridLinear(4, 3, target_in_features=4, op="shift")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.conv_stem(x)).mean((2, 3)))


ORDER = ["blocks.0.conv_pw", "blocks.0.conv_pwl", "blocks.1.conv_pw", "blocks.1.conv_pwl", "classifier"]


def _mf_names(model: nn.Module) -> list[str]:
    return [n for n, m in switchable_layers(model) if m.mf_enabled]


def test_switchable_layers_shallow_to_deep_excludes_mult() -> None:
    net = _Net()
    assert [n for n, _ in switchable_layers(net)] == ORDER


def test_exact_layer_sets_per_epoch() -> None:
    net = _Net()
    sched = BlockVariantSchedule(net, start=2, end=7, unit="epoch")  # 5 units over 5 epochs: one per epoch
    expected = {0: [], 1: [], 2: [], 3: ORDER[:1], 4: ORDER[:2], 5: ORDER[:3], 6: ORDER[:4], 7: ORDER, 20: ORDER}
    for epoch, names in expected.items():
        count = sched.apply(epoch)
        assert _mf_names(net) == names, epoch
        assert count == len(names)
        assert sched.mf_layer_names(epoch) == names
    assert net.conv_stem.mf_enabled is True  # a layer kept multiplicative (op="mult") is never touched


def test_exact_layer_sets_block_granularity_per_iter() -> None:
    net = _Net()
    sched = BlockVariantSchedule(net, start=0, end=30, unit="iter", granularity="block")
    assert sched.unit_names() == [ORDER[0:2], ORDER[2:4], ORDER[4:5]]
    # 3 units over 30 iterations: unit k turns MF at iteration 10 * (k + 1)
    for it, names in {0: [], 9: [], 10: ORDER[:2], 19: ORDER[:2], 20: ORDER[:4], 29: ORDER[:4], 30: ORDER}.items():
        sched.apply(it)
        assert _mf_names(net) == names, it


def test_monotone_and_fully_mf_at_end() -> None:
    net = _Net()
    sched = BlockVariantSchedule(net, start=3, end=40, unit="iter")
    previous: set[str] = set()
    for it in range(0, 50):
        sched.apply(it)
        current = set(_mf_names(net))
        assert previous <= current  # never turns back to multiplicative
        mf = _mf_names(net)
        assert mf == ORDER[: len(mf)]  # always a shallow prefix
        previous = current
    assert _mf_names(net) == ORDER


def test_mode_switch_only_and_behaviour() -> None:
    """No parameter is created or dropped; a non-MF layer computes an ordinary conv of the target weight."""
    torch.manual_seed(0)
    net = _Net()
    params = [id(p) for p in net.parameters()]
    sched = BlockVariantSchedule(net, 0, 4)
    sched.apply(0)
    assert [id(p) for p in net.parameters()] == params
    layer = net.blocks[0].conv_pw
    x = torch.randn(2, 4, 3, 3)
    with set_mode(net, Mode.TARGET):
        ref = F.conv2d(x.double(), layer.weight.double())
        assert torch.allclose(layer(x).double(), ref, atol=1e-5)
        sched.apply(4)
        assert not torch.allclose(layer(x).double(), ref, atol=1e-5)  # now the shift operator (rounded weights)


def test_apply_to_ema_copy_and_resume_is_stateless() -> None:
    net = _Net()
    ema = copy.deepcopy(net)
    sched = BlockVariantSchedule(net, 0, 5)
    sched.apply(3, ema)
    assert _mf_names(ema) == ORDER[:3]
    fresh = BlockVariantSchedule(net, 0, 5)  # "resumed" run: same state from the step alone
    fresh.apply(3)
    assert _mf_names(net) == _mf_names(ema)
    other = nn.Sequential(_conv())
    with pytest.raises(ValueError, match="differ"):
        sched.apply(1, other)


def test_pure_functions() -> None:
    layers = list("abcde")
    assert mf_layers_at(0.0, layers) == []
    assert mf_layers_at(0.39, layers) == ["a"]
    assert mf_layers_at(0.4, layers) == ["a", "b"]
    assert mf_layers_at(0.999, layers) == list("abcd")
    assert mf_layers_at(1.0, layers) == layers
    assert mf_count(0.3, 10) == 3  # 0.3 * 10 is 2.9999999999999996 in floating point
    assert schedule_progress(5, 5, 5) == 1.0 and schedule_progress(4, 5, 5) == 0.0
    with pytest.raises(ValueError, match="progress"):
        mf_layers_at(1.5, layers)
    set_all_mf(_Net(), True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(start=5, end=2), ValueError, "end"),
        (dict(start=-1, end=2), ValueError, ">= 0"),
        (dict(start=0, end=2.5, unit="iter"), ValueError, "whole number"),
        (dict(start=0, end=2, unit="step"), ValueError, "unit"),
        (dict(start=0, end=2, granularity="stage"), ValueError, "granularity"),
        (dict(start="0", end=2), TypeError, "start"),
    ],
)
def test_argument_validation(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        BlockVariantSchedule(_Net(), **kwargs)


def test_model_without_switchable_layers_is_rejected() -> None:
    with pytest.raises(ValueError, match="convert"):
        BlockVariantSchedule(nn.Sequential(nn.Conv2d(2, 2, 1), _conv("mult")), 0, 3)
    with pytest.raises(TypeError):
        BlockVariantSchedule("model", 0, 3)  # type: ignore[arg-type]
    assert variant_units(nn.Linear(2, 2)) == []
