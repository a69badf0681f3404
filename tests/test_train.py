"""End-to-end tests of the timm augmentation-training entry point (``shiftaddaug_plugin.train``, docs/algorithms.md §4,
§5).

Runs are tiny (128 Fashion-MNIST images at 16 px, MCUNet at width 0.25, batch 32, 2 epochs) and single-threaded:
on a shared 2-core machine OpenMP spin-waiting makes multi-threaded tiny convolutions 10-50x slower.
"""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftaddaug_plugin.data import resolve_fmnist_dir
from shiftaddaug_plugin.train.args import AUGMENTATION_FLAGS

REPO = Path(__file__).resolve().parents[1]
FMNIST = resolve_fmnist_dir()
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists() and not (FMNIST / "train-images-idx3-ubyte").exists(),
    reason=f"Fashion-MNIST not installed in {FMNIST} (sudo apt-get install dataset-fashion-mnist)",
)

TINY = ["--dataset", "fashion_mnist", "--train-subset", "128", "--val-subset", "64", "--img-size", "16",
        "-b", "32", "--epochs", "2", "--model", "shiftadd_mcunet", "--model-kwargs", "op=shift", "width_mult=0.25",
        "--aug-width-mult-list", "1.0", "2.0", "--aug-expand-list", "1.0", "2.0", "--bn-recal-images", "64",
        "--workers", "0", "--log-interval", "2", "--lr", "0.05", "--warmup-epochs", "0", "--seed", "7",
        "--width-aug-stop", "1.0"]  # width augmentation in both epochs: channels are sorted after epoch 0


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(argv: list[str]) -> dict:
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.cli import run

    return run(parse_args(argv))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists() and not (FMNIST / "train-images-idx3-ubyte").exists():
        pytest.skip(f"Fashion-MNIST not installed in {FMNIST}")
    out = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = _run([*TINY, "--output", str(out), "--experiment", "full", "--sort-diagnostics"])
    finally:
        torch.set_num_threads(threads)
    return summary, out / "full"


# ------------------------------------------------------------------------------------------------- end to end
@needs_fmnist
def test_end_to_end_export_matches_last_evaluation(full_run: tuple[dict, Path]) -> None:
    summary, out = full_run
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    rows = (out / "summary.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    for col in ("epoch", "train_loss_target", "train_loss_aug", "eval_top1", "eval_loss", "lr", "time"):
        assert col in header
    assert len(rows) == 3
    last = dict(zip(header, rows[-1].split(",")))
    assert float(last["train_loss_aug"]) > 0  # the augmented pass ran
    # exported model, rebuilt from exported_target.pth/.json by timm.create_model, reproduces the last evaluation
    assert summary["exported_top1"] == summary["eval_top1"]
    assert summary["exported_loss"] == pytest.approx(summary["eval_loss"], rel=1e-5)
    assert round(summary["eval_top1"], 4) == float(last["eval_top1"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["exported_top1"] == summary["exported_top1"]
    # multiplication-free apart from the stem conv the converter keeps multiplicative (docs/algorithms.md §3)
    assert on_disk["cost"]["multiplicative_layers"] == ["conv_stem"]
    assert on_disk["cost"]["shifts"] > 10 * on_disk["cost"]["mults"]


@needs_fmnist
def test_sort_into_target_runs_after_epoch_0_with_diagnostics(full_run: tuple[dict, Path]) -> None:
    _, out = full_run
    log = (out / "log.txt").read_text()
    assert "epoch 0: sorted" not in log and "epoch 1: sorted mid channels" in log and "(scope all)" in log
    lines = (out / "sort_diagnostics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 1
    diag = json.loads(lines[0])
    assert diag["epoch"] == 1 and diag["scope"] == "all"
    assert diag["sorted_remap"]["channels_moved"] > 0  # after a trained epoch some channel outranks a target one
    assert diag["sorted_no_remap"]["entries_remapped"] == 0  # shift targets: nothing to remap either way
    assert set(diag["before"]) >= {"mean_abs", "kurtosis", "channel_corr", "target_loss", "layers"}


@needs_fmnist
def test_exported_model_rebuilds_and_equals_hybrid_target(full_run: tuple[dict, Path]) -> None:
    from shiftaddaug_plugin import Mode, set_mode
    from shiftaddaug_plugin.convert import recalibrate_bn
    from shiftaddaug_plugin.layers.shift import ShiftConv2d
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.checkpoint import load_checkpoint, load_exported
    from shiftaddaug_plugin.train.cli import build_model
    from shiftaddaug_plugin.train.data import build_data

    _, out = full_run
    slim, meta = load_exported(out / "exported_target.pth")
    assert meta["model"] == "shiftadd_mcunet" and meta["input_size"] == [1, 16, 16]
    assert any(isinstance(m, ShiftConv2d) for m in slim.modules())
    args = parse_args([*TINY])
    hybrid, _ = build_model(args, 10, (1, 16, 16))
    hybrid.load_state_dict(load_checkpoint(out / "last.pth.tar")["state_dict"])
    # the checkpoint keeps the training BN statistics; the export carries the recalibrated ones (RecalibratedBN)
    recal = build_data(args).recal_loader
    with set_mode(hybrid, Mode.TARGET):
        recalibrate_bn(hybrid, recal, len(recal.dataset))
    hybrid.eval()
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), set_mode(hybrid, Mode.TARGET):
        torch.testing.assert_close(slim(x), hybrid(x), rtol=0, atol=0)


@needs_fmnist
def test_validate_exported_reproduces_the_exported_accuracy(full_run: tuple[dict, Path]) -> None:
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.cli import validate_exported

    summary, out = full_run
    result = validate_exported(parse_args(["--validate-exported", str(out / "exported_target.pth"),
                                           "--val-subset", "64", "--seed", "7", "--workers", "0"]))
    assert result["count"] == 64 and result["top1"] == summary["exported_top1"]


@needs_fmnist
def test_checkpoint_is_weights_only_loadable(full_run: tuple[dict, Path]) -> None:
    _, out = full_run
    for name in ("last.pth.tar", "model_best.pth.tar", "exported_target.pth"):
        obj = torch.load(out / name, map_location="cpu", weights_only=True)
        assert isinstance(obj, dict)
    ckpt = torch.load(out / "last.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "shiftadd_mcunet"
    assert {"optimizer", "scheduler", "rng", "history", "state_dict"} <= set(ckpt)
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporary files


@needs_fmnist
def test_resume_continues_and_equals_uninterrupted_run(full_run: tuple[dict, Path], tmp_path: Path) -> None:
    from shiftaddaug_plugin.train.checkpoint import load_checkpoint

    _, full_out = full_run
    first = _run([*TINY, "--output", str(tmp_path), "--experiment", "r", "--stop-after-epochs", "1"])
    assert first["status"] == "interrupted" and first["epochs_done"] == 1
    ckpt = tmp_path / "r" / "last.pth.tar"
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert not (tmp_path / "r" / "exported_target.pth").exists()
    second = _run([*TINY, "--resume", str(ckpt)])  # output folder = the checkpoint's
    assert second["status"] == "finished" and second["epochs_done"] == 2
    resumed, reference = load_checkpoint(ckpt), load_checkpoint(full_out / "last.pth.tar")
    assert resumed["epoch"] == reference["epoch"] == 2
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    ref_state = reference["optimizer"]["state"]
    for idx, state in resumed["optimizer"]["state"].items():
        torch.testing.assert_close(state["momentum_buffer"], ref_state[idx]["momentum_buffer"], rtol=0, atol=0)
    assert second["eval_top1"] == json.loads((full_out / "summary.json").read_text())["eval_top1"]
    rows = (tmp_path / "r" / "summary.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]


@needs_fmnist
def test_resume_after_the_last_epoch_finishes_the_export(full_run: tuple[dict, Path], tmp_path: Path) -> None:
    """A run killed after its last epoch but before the export resumes into evaluation + export (same result)."""
    import shutil

    summary, full_out = full_run
    (tmp_path / "k").mkdir()
    shutil.copy(full_out / "last.pth.tar", tmp_path / "k" / "last.pth.tar")
    done = _run([*TINY, "--resume", str(tmp_path / "k" / "last.pth.tar")])
    assert done["status"] == "finished" and done["eval_top1"] == summary["eval_top1"]
    assert (tmp_path / "k" / "exported_target.pth").is_file()
    with pytest.raises(ValueError, match="raise --epochs to at least 2"):
        _run([*TINY, "--epochs", "1", "--resume", str(tmp_path / "k" / "last.pth.tar")])


@needs_fmnist
def test_remap_fc_is_pretrained_then_frozen_and_kept_out_of_the_optimizer(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/algorithms.md §5: eq. 5's FC is pre-trained, then frozen for augmented training (jointly trained with SGD it
    blew the adder weights up: loss 1e5 within an epoch)."""
    from shiftaddaug_plugin.functional.adder import BACKEND_ENV
    from shiftaddaug_plugin.train.checkpoint import load_checkpoint

    monkeypatch.setenv(BACKEND_ENV, "eager")  # tiny shapes: compiling ~30 adder kernels would dominate the test

    argv = [*TINY, "--model-kwargs", "op=adder", "width_mult=0.25", "convert_kwargs={'remap':True}",
            "--remap-pretrain-steps", "3", "--output", str(tmp_path), "--experiment", "remap"]
    first = _run([*argv, "--stop-after-epochs", "1"])
    assert first["status"] == "interrupted"
    log = (tmp_path / "remap" / "log.txt").read_text()
    assert "pre-trained the FC of" in log and "for 3 steps" in log
    ckpt = load_checkpoint(tmp_path / "remap" / "last.pth.tar")
    fc_keys = [k for k in ckpt["state_dict"] if ".remap." in k and k.endswith("fc.weight")]
    flags = [k for k in ckpt["state_dict"] if k.endswith("remap.frozen_flag")]
    assert fc_keys and flags and all(bool(ckpt["state_dict"][k]) for k in flags)
    n_trainable = sum(1 for k in ckpt["state_dict"] if k.endswith((".weight", ".bias")) and ".remap." not in k
                      and "running" not in k)
    n_opt = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    assert n_opt == n_trainable  # remap FC parameters are not optimised
    second = _run([*TINY, "--model-kwargs", "op=adder", "width_mult=0.25", "convert_kwargs={'remap':True}",
                   "--resume", str(tmp_path / "remap" / "last.pth.tar")])
    assert second["status"] == "finished" and second["exported_top1"] == second["eval_top1"]
    final = load_checkpoint(tmp_path / "remap" / "last.pth.tar")
    for key in fc_keys:  # frozen: unchanged by the second epoch
        torch.testing.assert_close(final["state_dict"][key], ckpt["state_dict"][key], rtol=0, atol=0)


def _direct(argv: list[str]) -> list[str]:
    """``argv`` without the augmentation flags (with --no-aug the trainer refuses them)."""
    out, skip = [], False
    for token in argv:
        if token.startswith("--"):
            skip = token in AUGMENTATION_FLAGS
        if not skip:
            out.append(token)
    return out


@needs_fmnist
def test_baseline_with_ema_and_block_variant_run(tmp_path: Path) -> None:
    base = _run([*_direct(TINY), "--no-aug", "--model-ema", "--model-ema-decay", "0.9", "--output", str(tmp_path),
                 "--experiment", "base"])
    assert base["status"] == "finished" and base["exported_top1"] == base["eval_top1"]
    rows = (tmp_path / "base" / "summary.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert last["train_loss_aug"] == "" and last["eval_ema_top1"] != ""
    assert "state_dict_ema" in torch.load(tmp_path / "base" / "last.pth.tar", weights_only=True)
    bv = _run([*TINY, "--block-variant", "linear", "--block-variant-end", "0.5", "--output", str(tmp_path),
               "--experiment", "bv", "--sort-diagnostics"])
    rows = (tmp_path / "bv" / "summary.csv").read_text().strip().splitlines()
    mf = [int(dict(zip(header, r.split(",")))["mf_layers"]) for r in rows[1:]]
    assert mf[0] == 0 and mf[-1] > 0  # epoch 0 multiplicative, last epoch fully multiplication-free
    # --sort-diagnostics also logs the switch: every layer turns MF at epoch 1; shift layers are never remapped
    switch = [json.loads(line) for line in (tmp_path / "bv" / "switch_diagnostics.jsonl").read_text().splitlines()]
    assert [d["epoch"] for d in switch] == [1] and len(switch[0]["switching"]) == mf[-1]
    assert switch[0]["remap"]["mean_abs"] == switch[0]["no_remap"]["mean_abs"] > 0
    assert switch[0]["already_mf"]["layers"] == 0
    assert "switch diagnostics" in (tmp_path / "bv" / "log.txt").read_text()
    assert bv["exported_top1"] == bv["eval_top1"]
    assert bv["cost"]["multiplicative_layers"] == ["conv_stem"]


@needs_fmnist
def test_nas_arch_trains_and_exports_through_main(tmp_path: Path) -> None:
    """``shiftaddaug-train --model shiftadd_custom --model-kwargs arch=<json>``: a tiny NAS arch (shift base op, one
    block kept 'mult', one depth-augmentation block) trains, exports (DepthAugBlock dropped, per-block operators kept)
    and the exported model, rebuilt from its files alone, reproduces the last evaluation."""
    from shiftaddaug_plugin.nas.space import SPACE_PRESETS, Arch
    from shiftaddaug_plugin.nas.stage2 import TargetSelection, save_depth_aug
    from shiftaddaug_plugin.train.checkpoint import load_exported
    from shiftaddaug_plugin.train.cli import main

    data = SPACE_PRESETS["tiny"].max_arch("shift").to_dict()
    data["stages"][1]["blocks"][1]["op"] = "mult"  # per-block operator (NASA's hybrid space)
    deep = Arch.from_dict(data)
    arch_file = tmp_path / "arch.json"
    save_depth_aug(arch_file, deep, TargetSelection(((True, False), (True, True), (True, True))))
    argv = ["--dataset", "fashion_mnist", "--train-subset", "128", "--val-subset", "64", "--img-size", "16",
            "-b", "32", "--epochs", "1", "--model", "shiftadd_custom", "--model-kwargs", f"arch={arch_file}",
            "--aug-width-mult-list", "1.0", "2.0", "--aug-expand-list", "1.0", "2.0", "--bn-recal-images", "64",
            "--workers", "0", "--log-interval", "2", "--lr", "0.05", "--warmup-epochs", "0", "--seed", "3",
            "--output", str(tmp_path), "--experiment", "nas"]
    assert main(argv) == 0
    out = tmp_path / "nas"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["export_matches_eval"] is True
    assert summary["exported_top1"] == summary["eval_top1"]
    assert summary["exported_loss"] == pytest.approx(summary["eval_loss"], rel=1e-5)
    last = (out / "summary.csv").read_text().strip().splitlines()[-1].split(",")
    assert round(summary["eval_top1"], 4) == float(last[4])  # eval_top1 column of the last (only) epoch
    arch_file.unlink()  # the rebuild recipe holds the arch inline
    rebuilt, meta = load_exported(out)
    assert meta["model_kwargs"]["arch"]["depth_aug"] == {"keep": [[True, False], [True, True], [True, True]]}
    assert [len(stack) for stack in rebuilt.blocks] == [1, 1, 2, 2]  # DS block + stages without the aug block
    assert type(rebuilt.blocks[2][1].conv_pw) is nn.Conv2d  # the 'mult' block
    assert type(rebuilt.blocks[2][0].conv_pw).__name__ == "ShiftConv2d"
    mults = set(summary["cost"]["multiplicative_layers"])  # + what the default ConvertConfig keeps (stem, classifier)
    assert {"blocks.2.1.conv_pw", "blocks.2.1.conv_dw", "blocks.2.1.conv_pwl"} <= mults
    assert not [n for n in mults if n.startswith(("blocks.1.", "blocks.2.0.", "blocks.3."))]


# ------------------------------------------------------------------------------------------------- pieces
def test_nan_guard_stops_before_the_optimizer_step() -> None:
    from shiftaddaug_plugin.train.augtrain import NonFiniteLossError, ShiftAddAugTask, train_one_epoch

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    task = ShiftAddAugTask(model, augment=False, criterion=lambda out, y: out.sum() * float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    with pytest.raises(NonFiniteLossError, match="last checkpoint"):
        train_one_epoch(task, loader, opt, epoch=0, device=torch.device("cpu"), log=lambda s: None)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_nan_guard_skips_up_to_max_nonfinite_steps_then_stops() -> None:
    """``--max-nonfinite-steps 2``: the first two NaN batches are skipped (no update), the third stops the run; the
    count spans epochs."""
    from shiftaddaug_plugin.train.augtrain import NonFiniteLossError, ShiftAddAugTask, train_one_epoch

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    calls = {"n": 0}

    def criterion(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls["n"] in (2, 4, 5) else loss

    task = ShiftAddAugTask(model, augment=False, criterion=criterion)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(3)]
    logs: list[str] = []
    _, updates = train_one_epoch(task, loader, opt, epoch=0, device=torch.device("cpu"), log=logs.append,
                                 max_nonfinite=2)
    assert updates == 2 and task.nonfinite_steps == 1 and sum("step skipped" in m for m in logs) == 1
    with pytest.raises(NonFiniteLossError, match=r"non-finite step 3 \(--max-nonfinite-steps 2\)"):
        train_one_epoch(task, loader, opt, epoch=1, device=torch.device("cpu"), num_updates=updates,
                        log=logs.append, max_nonfinite=2)
    assert sum("step skipped" in m for m in logs) == 2


def test_joint_loss_is_target_plus_alpha_augmented() -> None:
    import timm

    import shiftaddaug_plugin.models  # noqa: F401
    from shiftaddaug_plugin import Mode, set_mode
    from shiftaddaug_plugin.augment import WidthSampler
    from shiftaddaug_plugin.convert import sample_active_widths
    from shiftaddaug_plugin.train.augtrain import ShiftAddAugTask

    torch.manual_seed(0)
    model = timm.create_model("shiftadd_mcunet", op="shift", aug=True, width_mult=0.25, num_classes=10, in_chans=1,
                              aug_width_mult_list=[1.0, 2.0], aug_expand_list=[1.0, 2.0]).eval()
    x, y = torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3])
    task = ShiftAddAugTask(model, alpha=0.5, sampler=WidthSampler(3), criterion=nn.CrossEntropyLoss())
    task.step = 11
    out = task(x, y)
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        ref_t = nn.functional.cross_entropy(model(x), y)
    sample_active_widths(model, random.Random("shiftaddaug:3:11"), width=True, expand=True)  # the task's draw
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        ref_a = nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(out["loss_target"], ref_t)
    torch.testing.assert_close(out["loss_aug"], ref_a)
    torch.testing.assert_close(out["loss"], ref_t + 0.5 * ref_a)
    assert not torch.equal(ref_t, ref_a)


def test_block_variant_schedule_goes_shallow_to_deep() -> None:
    """``--block-variant linear --block-variant-end 0.5`` over 4 epochs: exact MF layer sets per epoch, on the model
    and on its EMA copy (docs/algorithms.md §6); ``none``: all MF from epoch 0."""
    import timm

    import shiftaddaug_plugin.models  # noqa: F401
    from shiftaddaug_plugin.block_variant import BlockVariantSchedule
    from shiftaddaug_plugin.layers import HybridConv2d, HybridLinear
    from shiftaddaug_plugin.train.cli import _apply_block_variant

    model = timm.create_model("shiftadd_mcunet", op="shift", aug=True, width_mult=0.25, num_classes=10, in_chans=1)
    ema = copy.deepcopy(model)
    # independent reference: hybrid conv/linear layers that are not kept multiplicative, in registration order
    order = [n for n, m in model.named_modules() if isinstance(m, (HybridConv2d, HybridLinear)) and m.op != "mult"]
    assert "conv_stem" not in order and order[-1] == "classifier" and len(order) >= 8

    def mf(net: nn.Module) -> list[str]:
        return [n for n in order if net.get_submodule(n).mf_enabled]

    schedule = BlockVariantSchedule(model, start=0, end=0.5 * 4, unit="epoch")  # what run() builds
    n = len(order)
    for epoch, count in ((0, 0), (1, n // 2), (2, n), (3, n)):
        assert _apply_block_variant(schedule, model, epoch) == count
        assert _apply_block_variant(schedule, ema, epoch) == count
        assert mf(model) == mf(ema) == order[:count], epoch
    assert model.conv_stem.mf_enabled  # kept multiplicative by the config: never switched
    _apply_block_variant(schedule, model, 0)
    assert _apply_block_variant(None, model, 0) == n and mf(model) == order  # --block-variant none


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftaddaug_plugin.train import checkpoint as ck

    path = tmp_path / "last.pth.tar"
    ck.atomic_save({"epoch": 1, "w": torch.ones(2)}, path)
    with pytest.raises(TypeError, match="weights_only"):
        ck.atomic_save({"epoch": 2, "bad": object()}, path)

    def exploding_save(obj, handle):  # noqa: ANN001
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_save({"epoch": 3}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth.tar"]


def test_rng_state_roundtrip_is_weights_only(tmp_path: Path) -> None:
    import numpy as np

    from shiftaddaug_plugin.train.checkpoint import atomic_save, capture_rng_state, restore_rng_state

    rng = random.Random(5)
    state = capture_rng_state(rng)
    atomic_save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1), rng.random())
    random.seed(0), np.random.seed(0), torch.manual_seed(0), rng.seed(0)
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"], rng)
    assert (random.random(), np.random.rand(), torch.rand(1), rng.random()) == expected


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs"),
    (["--width-aug-stop", "1.5"], "--width-aug-stop"),
    (["--aug-width-mult-list", "0.5", "1.0"], "multipliers must be"),
    (["--model-kwargs", "aug=true"], "set by the trainer"),
    (["--lr", "-1"], "--lr"),
    (["--resume", "/nonexistent/last.pth.tar"], "no such checkpoint"),
    (["--input-size", "1", "0", "16"], "--input-size"),
])
def test_bad_arguments_raise_clear_errors(argv: list[str], message: str) -> None:
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.cli import main

    with pytest.raises(ValueError, match=message):
        parse_args(argv)
    assert main(argv) == 2


def test_yaml_config_keys_are_flag_names(tmp_path: Path) -> None:
    from shiftaddaug_plugin.train.args import parse_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch-size: 7\nepochs: 3\nmodel_kwargs: {op: adder}\naug_expand_list: [1.0, 1.6]\n")
    args = parse_args(["-c", str(cfg), "--epochs", "5"])
    assert (args.batch_size, args.epochs, args.model_kwargs) == (7, 5, {"op": "adder"})
    assert args.aug_expand_list == [1.0, 1.6]
    cfg.write_text("batch_sise: 7\n")
    with pytest.raises(ValueError, match="unknown key 'batch_sise'.*batch_size"):
        parse_args(["-c", str(cfg)])
    for recipe in sorted((REPO / "configs" / "timm").glob("*.yaml")):
        args = parse_args(["-c", str(recipe)])
        assert args.opt == "sgd" and args.weight_decay == 4e-5 and args.smoothing == 0.1, recipe.name


def test_missing_fashion_mnist_names_the_apt_package(tmp_path: Path) -> None:
    from shiftaddaug_plugin.train.args import parse_args
    from shiftaddaug_plugin.train.data import build_data

    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build_data(parse_args(["--data-dir", str(tmp_path)]))


# ------------------------------------------------------------------------------------------------- DDP
@needs_fmnist
@pytest.mark.slow
def test_ddp_two_cpu_ranks_end_identical(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "shiftaddaug_plugin.train.cli", *TINY, "-b", "16", "--device", "cpu",
           "--output", str(tmp_path), "--experiment", "ddp"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    sums = summary["ddp_rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert summary["exported_top1"] == summary["eval_top1"]
    assert summary["eval_images"] == 64  # sharded evaluation covers every image exactly once
