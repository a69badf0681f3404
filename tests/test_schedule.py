"""One augmentation schedule for the timm trainer and the mmseg hook (shiftaddaug_plugin.augment.schedule).

The two integrations used to compute it separately and disagreed (width stop rounded half up vs half to even, the
block-variant end unrounded vs rounded, the hook sorting even without an augmented pass). Here both run on the same
schedule and must take the same decisions step by step."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from shiftaddaug_plugin.augment import AugSchedule, fraction_to_step


@pytest.mark.parametrize("fraction, total, step", [(0.5, 5, 3), (0.5, 7, 4), (0.5, 4, 2), (0.25, 10, 3),
                                                   (0.0, 9, 0), (1.0, 9, 9), (0.5, 0, 0)])
def test_fraction_to_step_rounds_half_up(fraction: float, total: int, step: int) -> None:
    assert fraction_to_step(fraction, total) == step


@pytest.mark.parametrize("fraction, total", [(1.5, 4), (-0.1, 4), (float("nan"), 4), (0.5, -1), (0.5, 2.0)])
def test_fraction_to_step_rejects_bad_input(fraction: float, total: int) -> None:
    with pytest.raises(ValueError):
        fraction_to_step(fraction, total)


def test_schedule_decisions() -> None:
    s = AugSchedule(total=5, width_aug_stop=0.5, sort_interval=1, block_variant_end=0.5)
    plans = [s.at(i) for i in range(5)]
    assert [p.width_aug for p in plans] == [True, True, True, False, False]  # 0.5 x 5 -> stops at 3 (half up)
    assert [p.sort for p in plans] == [False, True, True, False, False]  # after a cycle, while widening
    assert [p.block_variant_progress for p in plans] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0]  # end = step 3, not 2.5
    every2 = AugSchedule(total=9, width_aug_stop=1.0, sort_interval=2)
    assert [i for i in range(9) if every2.sort(i)] == [2, 4, 6, 8]
    assert every2.block_variant_progress(3) is None
    direct = AugSchedule(total=5, augment=False, sort_interval=1)
    assert not any(direct.width_aug(i) or direct.sort(i) for i in range(5))  # no augmented pass: nothing to sort
    with pytest.raises(ValueError, match="total"):
        AugSchedule(total=0)
    with pytest.raises(ValueError, match="sort_interval"):
        AugSchedule(total=4, sort_interval=-1)


def _mmseg_available() -> bool:
    try:
        import mmcv.ops  # noqa: F401
        import mmseg  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _mmseg_tests() -> types.ModuleType:
    """tests/test_mmseg.py as a module (its small segmentor builder); the suite runs in importlib mode."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mmseg_tests", Path(__file__).with_name("test_mmseg.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETTINGS = dict(total=5, width_aug_stop=0.5, sort_interval=1, block_variant_end=0.5)


def _trainer_decisions(tmp_path: Path) -> list[tuple[bool, bool, int]]:
    """(width_aug, sorted before this epoch, MF layers) of each epoch of a real tiny ``shiftaddaug-train`` run."""
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.cli import run

    argv = ["--dataset", "fashion_mnist", "--train-subset", "64", "--val-subset", "32", "--img-size", "16",
            "-b", "32", "--epochs", str(SETTINGS["total"]), "--model", "shiftadd_mcunet",
            "--model-kwargs", "op=shift", "width_mult=0.25", "--aug-width-mult-list", "1.0", "2.0",
            "--aug-expand-list", "1.0", "2.0", "--bn-recal-images", "32", "--workers", "0", "--log-interval", "0",
            "--warmup-epochs", "0", "--seed", "3", "--eval-interval", "5",
            "--width-aug-stop", str(SETTINGS["width_aug_stop"]), "--sort-interval", str(SETTINGS["sort_interval"]),
            "--block-variant", "linear", "--block-variant-end", str(SETTINGS["block_variant_end"]),
            "--output", str(tmp_path), "--experiment", "sched"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(parse_args(argv))
    finally:
        torch.set_num_threads(threads)
    log = (tmp_path / "sched" / "log.txt").read_text().splitlines()
    sorted_epochs = {int(line.split("epoch ")[1].split(":")[0]) for line in log if "sorted mid channels" in line}
    ckpt = torch.load(tmp_path / "sched" / "last.pth.tar", weights_only=True)
    return [(bool(r["width_aug"]), r["epoch"] in sorted_epochs, int(r["mf_layers"])) for r in ckpt["history"]]


@pytest.mark.mmseg
def test_trainer_and_hook_take_the_same_decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real trainer run (5 epochs) and the real hook driving a real segmentor (5 iterations) on the same schedule:
    the same width switches, the same sort points, the same block-variant progress, step by step."""
    if not _mmseg_available():
        pytest.skip("mmcv with compiled ops / mmseg unusable")
    from mmengine.registry import init_default_scope

    import shiftaddaug_plugin.mmseg_ext as ext
    from shiftaddaug_plugin.block_variant import mf_count, variant_units

    schedule = AugSchedule(**SETTINGS)
    expected = [schedule.at(i) for i in range(SETTINGS["total"])]

    trainer = _trainer_decisions(tmp_path)
    units_t = trainer[-1][2]  # the last epochs are past the block-variant end: every unit is MF

    init_default_scope("mmseg")
    seg = _mmseg_tests()._build(str(tmp_path / "scenes"))
    units = variant_units(seg)
    sorts: list[int] = []

    def fake_sort(model, *, optimizer=None, ema=None, scope="all", remap_moved=True, stats=None):
        sorts.append(runner.iter)
        if stats is not None:
            stats.update(channels_moved=0, entries_remapped=0)
        return {}

    monkeypatch.setattr(ext.hook, "sort_channels", fake_sort)
    hook = ext.ShiftAddAugHook(width_aug_end=SETTINGS["width_aug_stop"], sort_interval=SETTINGS["sort_interval"],
                               block_variant_end=SETTINGS["block_variant_end"])
    runner = types.SimpleNamespace(model=seg, max_iters=SETTINGS["total"], iter=0, hooks=[],
                                   optim_wrapper=types.SimpleNamespace(optimizer=None),
                                   logger=types.SimpleNamespace(info=lambda *a: None))
    hook_decisions = []
    for it in range(SETTINGS["total"]):
        runner.iter = it
        hook.before_train_iter(runner, it)
        mf = sum(all(m.mf_enabled for _, m in unit) for unit in units)
        hook_decisions.append((bool(seg.width_aug_enabled), it in sorts, mf))

    for i, plan in enumerate(expected):
        assert trainer[i][:2] == (plan.width_aug, plan.sort), (i, trainer[i], plan)
        assert hook_decisions[i][:2] == (plan.width_aug, plan.sort), (i, hook_decisions[i], plan)
        assert trainer[i][2] == mf_count(plan.block_variant_progress, units_t), (i, trainer[i], plan)
        assert hook_decisions[i][2] == mf_count(plan.block_variant_progress, len(units)), (i, hook_decisions[i], plan)


@pytest.mark.mmseg
def test_hook_does_not_sort_without_an_augmented_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """alpha=0 (direct training): the trainer's --no-aug never sorts; the hook used to sort anyway."""
    if not _mmseg_available():
        pytest.skip("mmcv with compiled ops / mmseg unusable")
    from mmengine.registry import init_default_scope

    import shiftaddaug_plugin.mmseg_ext as ext

    init_default_scope("mmseg")
    seg = _mmseg_tests()._build(str(tmp_path / "scenes"), alpha=0.0)
    calls: list[int] = []
    monkeypatch.setattr(ext.hook, "sort_channels", lambda *a, **k: calls.append(1))
    hook = ext.ShiftAddAugHook(sort_interval=1)
    runner = types.SimpleNamespace(model=seg, max_iters=6, iter=0, hooks=[],
                                   optim_wrapper=types.SimpleNamespace(optimizer=None),
                                   logger=types.SimpleNamespace(info=lambda *a: None))
    for it in range(6):
        runner.iter = it
        hook.before_train_iter(runner, it)
        assert not seg.width_aug_enabled
    assert calls == []
