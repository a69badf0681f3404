"""The shared training core (shiftaddaug_plugin.augment): sampler, joint loss, BN recalibration context."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from shiftaddaug_plugin.augment import RecalibratedBN, WidthSampler, joint_loss
from shiftaddaug_plugin.convert import ConvertConfig, convert, sample_active_widths
from shiftaddaug_plugin.modes import Mode, get_mode


def _hybrid() -> nn.Module:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                          nn.BatchNorm2d(4))
    cfg = ConvertConfig(op="shift", aug_width_mult_list=[1.0, 1.5, 2.0], keep_first_conv_mult=False)
    return convert(dense, cfg, example_input=torch.randn(1, 2, 6, 6))


def _widths(model: nn.Module) -> list[int]:
    return [m.active_out_channels for m in model.modules() if hasattr(m, "active_out_channels")]


def test_sampler_is_a_pure_function_of_seed_and_step() -> None:
    model = _hybrid()
    a = WidthSampler(5).sample(model, 3)
    assert WidthSampler(5).sample(model, 3) == a  # a fresh sampler (a resumed run, another rank) draws the same
    assert a == sample_active_widths(model, random.Random("shiftaddaug:5:3"))
    draws = {tuple(sorted(WidthSampler(5).sample(model, s).items())) for s in range(30)}
    assert len(draws) > 1  # the steps differ
    with pytest.raises(TypeError, match="int"):
        WidthSampler("5")  # type: ignore[arg-type]


def test_joint_loss_order_modes_and_sampling() -> None:
    model = _hybrid()
    seen: list[tuple[str, Mode | None, list[int]]] = []
    lt, la = joint_loss(model, 4, lambda: seen.append(("t", get_mode(model), _widths(model))) or 1.0,
                        lambda: seen.append(("a", get_mode(model), _widths(model))) or 2.0,
                        sampler=WidthSampler(1))
    assert (lt, la) == (1.0, 2.0)
    assert [s[:2] for s in seen] == [("t", Mode.TARGET), ("a", Mode.AUGMENTED)]
    ref = _hybrid()
    WidthSampler(1).sample(ref, 4)
    assert seen[1][2] == _widths(ref)  # the augmented pass ran at step 4's widths
    assert get_mode(model) is Mode.TARGET
    lt, la = joint_loss(model, 4, lambda: 1.0, lambda: pytest.fail("no augmented pass"), sampler=WidthSampler(1),
                        augment=False)
    assert la is None


def test_joint_loss_restores_target_mode_on_error() -> None:
    model = _hybrid()

    def boom() -> float:
        raise RuntimeError("aug failed")

    with pytest.raises(RuntimeError, match="aug failed"):
        joint_loss(model, 0, lambda: 0.0, boom, sampler=WidthSampler(0))
    assert get_mode(model) is Mode.TARGET


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_recalibrated_bn_restores_training_statistics() -> None:
    model, ema = _hybrid(), _hybrid()
    with torch.no_grad():
        for m in (model, ema):
            m(torch.randn(4, 2, 6, 6))  # some training statistics (augmented mode)
    before, before_ema = _bn_state(model), _bn_state(ema)
    calls = []

    def recal(m: nn.Module) -> None:
        calls.append(get_mode(m))
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.fill_(7.0)

    with RecalibratedBN(recal, model, ema) as ctx:
        assert ctx.active and calls == [Mode.TARGET, Mode.TARGET]
        assert all((bn.running_mean == 7).all() for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))
    for k, v in _bn_state(model).items():
        assert torch.equal(v, before[k]), k
    for k, v in _bn_state(ema).items():
        assert torch.equal(v, before_ema[k]), k


def test_recalibrated_bn_restores_after_a_failure() -> None:
    model = _hybrid()
    before = _bn_state(model)

    def half_then_fail(m: nn.Module) -> None:
        next(bn for bn in m.modules() if isinstance(bn, nn.BatchNorm2d)).running_var.fill_(3.0)
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        with RecalibratedBN(half_then_fail, model):
            pass
    for k, v in _bn_state(model).items():
        assert torch.equal(v, before[k]), k
    ctx = RecalibratedBN(lambda m: None, model)
    with ctx:
        with pytest.raises(RuntimeError, match="already active"):
            ctx.__enter__()
