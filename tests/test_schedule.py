"""One rounding rule for schedule fractions in the timm trainer and the mmseg hook (half up, not half to even)."""
from __future__ import annotations

import types

import pytest

from shiftaddaug_plugin.schedule import fraction_to_step


@pytest.mark.parametrize("fraction, total, step", [(0.5, 5, 3), (0.5, 7, 4), (0.5, 4, 2), (0.25, 10, 3),
                                                   (0.0, 9, 0), (1.0, 9, 9), (0.5, 0, 0)])
def test_fraction_to_step_rounds_half_up(fraction: float, total: int, step: int) -> None:
    assert fraction_to_step(fraction, total) == step


@pytest.mark.parametrize("fraction, total", [(1.5, 4), (-0.1, 4), (float("nan"), 4), (0.5, -1), (0.5, 2.0)])
def test_fraction_to_step_rejects_bad_input(fraction: float, total: int) -> None:
    with pytest.raises(ValueError):
        fraction_to_step(fraction, total)


def test_trainer_uses_the_shared_rule() -> None:
    pytest.importorskip("timm")
    from shiftaddaug_plugin.train.cli import width_aug_stop_epoch

    assert [width_aug_stop_epoch(e, 0.5) for e in (3, 5, 7, 9)] == [2, 3, 4, 5]


@pytest.mark.mmseg
def test_hook_uses_the_shared_rule() -> None:
    """The hook rounded with round() (half to even): 0.5 x 5 iterations stopped after 2, the trainer after 3."""
    from shiftaddaug_plugin.mmseg_ext.hook import ShiftAddAugHook

    hook = ShiftAddAugHook(width_aug_end=0.5)
    for total in (3, 5, 7, 9):
        assert hook._width_end_iter(types.SimpleNamespace(max_iters=total)) == fraction_to_step(0.5, total)
