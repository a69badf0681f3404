"""Two-stage NAS (docs/algorithms.md §7): space encoding, supernet extraction, cost/constraints, stage 2, Optuna search
(resume, two workers), CLI and the shiftadd_custom timm entrypoint. Tiny supernet, 16 px, few trials."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # tiny nets: one thread is fastest (and the machine is shared)

timm = pytest.importorskip("timm")
optuna = pytest.importorskip("optuna")

from shiftaddaug_plugin.cost import count_ops  # noqa: E402
from shiftaddaug_plugin.modes import Mode, set_mode  # noqa: E402
from shiftaddaug_plugin.nas import custom_model  # noqa: E402,F401  (registers shiftadd_custom)
from shiftaddaug_plugin.nas.cost import ArchCost, Constraints, arch_cost  # noqa: E402
from shiftaddaug_plugin.nas.custom_model import build_efficientnet  # noqa: E402
from shiftaddaug_plugin.nas.search import ArchEvaluator, collect_candidates, open_study, run_search  # noqa: E402
from shiftaddaug_plugin.nas.space import SPACE_PRESETS, Arch, BlockArch, SearchSpace, StageArch  # noqa: E402
from shiftaddaug_plugin.nas.stage2 import (  # noqa: E402
    DepthAugBlock,
    TargetSelection,
    depth_aug_loss,
    drop_unselected,
    export_target,
    select_target_greedy,
    wrap_depth_augmentation,
)
from shiftaddaug_plugin.nas.supernet import Supernet, save_supernet, train_supernet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACE = SPACE_PRESETS["tiny"]


def _randomise_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, ...]:
    """Fashion-MNIST slices at 16 px (the real proxy data path)."""
    from shiftaddaug_plugin.nas.data import load_fmnist_splits

    s = load_fmnist_splits(16, 300, 200, seed=0)
    return s.train_x, s.train_y, s.holdout_x, s.holdout_y


@pytest.fixture(scope="module")
def supernet(data: tuple[torch.Tensor, ...]) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(SPACE.with_ops(("mult", "shift", "adder"), "shift"), num_classes=10, in_chans=1)
    train_supernet(net, data[0], data[1], epochs=1, batch_size=100, log=None)
    return net.eval()


# ------------------------------------------------------------------------------------------------ space
def test_arch_json_roundtrip_and_block_strings() -> None:
    arch = Arch((StageArch(16, 2, (BlockArch(5, 3, "shift"), BlockArch(3, 2.5, "adder"))),
                 StageArch(24, 1, (BlockArch(7, 6),))), stem_chs=8, ds_chs=8, head_conv_chs=32, base_op="shift")
    assert Arch.from_json(arch.to_json()) == arch
    assert arch.block_strings() == [["ds_r1_k3_s1_c8_noskip"],
                                    ["ir_r1_k5_s2_e3_c16_noskip", "ir_r1_k3_s1_e2.5_c16"],
                                    ["ir_r1_k7_s1_e6_c24_noskip"]]
    assert arch.op_overrides() == {r"blocks\.1\.1\..+": "adder", r"blocks\.2\.0\..+": "mult"}
    model = build_efficientnet(arch, num_classes=5, in_chans=1)
    b = model.blocks[1][1]
    assert b.conv_dw.kernel_size == (3, 3) and b.conv_pw.out_channels == 40  # make_divisible(16 * 2.5)
    assert b.has_skip and not model.blocks[1][0].has_skip and not model.blocks[2][0].has_skip
    assert model.conv_head.out_channels == 32 and model.classifier.in_features == 32
    with pytest.raises(ValueError, match="odd"):
        BlockArch(4, 3)
    with pytest.raises(ValueError, match="op"):
        BlockArch(3, 3, "mul")


def test_space_encode_decode_validate() -> None:
    space = SPACE.with_ops(("mult", "shift"))
    rng = random.Random(0)
    for _ in range(20):
        arch = space.random_arch(rng)
        assert space.decode(space.encode(arch)) == arch
    assert space.max_arch().depths == (2, 2, 2) and space.min_arch().widths == (8, 16, 16)
    bad = Arch(tuple(StageArch(s.out_chs, s.stride, (BlockArch(9, 2.0),)) for s in space.max_arch().stages),
               stem_chs=8, ds_chs=8)
    with pytest.raises(ValueError, match="kernel 9"):
        space.validate(bad)
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="unknown search-space keys"):
        SearchSpace.from_dict({**space.to_dict(), "kernels": [3]})


# ------------------------------------------------------------------------------------------------ supernet
@pytest.mark.parametrize("kernel_transform", [False, True])
def test_extracted_subnet_equals_supernet(kernel_transform: bool) -> None:
    torch.manual_seed(1)
    net = Supernet(SPACE, num_classes=10, in_chans=1, kernel_transform=kernel_transform)
    _randomise_bn(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".transforms." in name:
                p.add_(0.05 * torch.randn_like(p))
    net.eval()
    x = torch.randn(3, 1, 16, 16)
    rng = random.Random(kernel_transform)
    for arch in [SPACE.max_arch(), SPACE.min_arch()] + [SPACE.random_arch(rng) for _ in range(5)]:
        net.set_active(arch)
        out = net(x)
        sub = net.extract(arch)
        assert type(sub).__name__ == "EfficientNet" and not sub.training
        torch.testing.assert_close(sub(x), out, atol=1e-5, rtol=1e-5)
        # same network as the timm entrypoint builds from the arch JSON (state dict keys and shapes)
        ref = timm.create_model("shiftadd_custom", arch=arch.to_dict(), num_classes=10, in_chans=1)
        ref.load_state_dict(sub.state_dict())


def test_elastic_kernel_is_centre_crop_without_transform() -> None:
    net = Supernet(SPACE)
    dw = net.blocks[1][0].conv_dw
    full = dw.weight.detach()
    assert torch.equal(dw.weight_for(5, 5), full[:5, :, 1:6, 1:6])
    assert torch.equal(dw.weight_for(5, 3), full[:5, :, 2:5, 2:5])
    assert torch.equal(dw.weight_for(4, 7), full[:4])


def test_supernet_training_improves_held_out_accuracy(data: tuple[torch.Tensor, ...], supernet: Supernet) -> None:
    ev = ArchEvaluator(supernet, data[0], data[2], data[3], recal_images=200)
    fresh = Supernet(supernet.space, 10, 1).eval()
    ev_fresh = ArchEvaluator(fresh, data[0], data[2], data[3], recal_images=200)
    arch = SPACE.max_arch()
    assert ev.accuracy(supernet.extract(arch)) > ev_fresh.accuracy(fresh.extract(arch)) + 10.0


# ------------------------------------------------------------------------------------------------ cost
def test_arch_cost_matches_converted_network() -> None:
    """Re-priced counts equal count_ops of the really converted + exported MF network (shiftadd_custom)."""
    arch = Arch((StageArch(16, 2, (BlockArch(5, 3, "shift"), BlockArch(3, 2, "adder"))),
                 StageArch(24, 2, (BlockArch(7, 3, "mult"), BlockArch(3, 3, "shiftadd")))),
                stem_chs=8, ds_chs=8, base_op="shift")
    plain = build_efficientnet(arch, num_classes=10, in_chans=1)
    ours = arch_cost(plain, arch, (1, 16, 16))
    mf = timm.create_model("shiftadd_custom", arch=arch.to_dict(), num_classes=10, in_chans=1)
    ref = count_ops(mf, (1, 16, 16))
    assert (ours.mults, ours.adds, ours.shifts) == (ref.mults, ref.adds, ref.shifts)
    assert ours.macs == count_ops(plain, (1, 16, 16)).macs  # MACs of the multiplicative network (size measure)
    assert ours.energy_uj == pytest.approx(ref.energy_pj * 1e-6, rel=1e-9)
    mult_only = arch_cost(plain, arch.with_ops("mult"), (1, 16, 16))
    assert mult_only.mults == mult_only.macs == count_ops(plain, (1, 16, 16)).mults
    assert ours.energy_uj < mult_only.energy_uj


def test_constraints() -> None:
    c = Constraints(max_macs=100, max_peak_kb=2.0)
    cost = ArchCost(macs=120, mults=0, adds=0, shifts=0, params=1, peak_kb=1.0, energy_uj=0.0)
    assert c.violations(cost) == pytest.approx([0.2, -0.5]) and not c.satisfied(cost)
    assert Constraints().violation(cost) == -1.0
    with pytest.raises(ValueError, match="max_params"):
        Constraints(max_params=-1)


# ------------------------------------------------------------------------------------------------ search
def test_constraints_never_violated_by_returned_candidates(data: tuple[torch.Tensor, ...], supernet: Supernet,
                                                           tmp_path: Path) -> None:
    ev = ArchEvaluator(supernet, data[0], data[2], data[3], recal_images=100)
    rng = random.Random(5)
    macs = sorted(arch_cost(supernet.extract(a), a, (1, 16, 16)).macs
                  for a in (supernet.space.random_arch(rng) for _ in range(15)))
    limit = Constraints(max_macs=macs[len(macs) // 2], max_peak_kb=64)  # about half of the space is infeasible
    res = run_search(ev, constraints=limit, n_trials=10, out_dir=str(tmp_path), population_size=4, log=None)
    infeasible = [t for t in res.study.trials if t.user_attrs.get("feasible") is False]
    assert infeasible, "the limit should cut the space (some trials infeasible)"
    assert res.candidates and res.best is not None
    for cand in res.candidates:
        model = supernet.extract(cand.arch)
        assert count_ops(model, (1, 16, 16)).macs == cand.cost.macs <= limit.max_macs  # independent recount
        assert limit.satisfied(cand.cost)
    # a stricter constraint applied to the stored study filters again
    strict = Constraints(max_macs=min(c.cost.macs for c in res.candidates) - 1)
    assert collect_candidates(res.study, strict) == []


def test_search_resumes_after_interruption(data: tuple[torch.Tensor, ...], supernet: Supernet,
                                           tmp_path: Path) -> None:
    ev = ArchEvaluator(supernet, data[0], data[2], data[3], recal_images=100)

    class Stop(Exception):
        pass

    def stop_after_3(study: object, trial: object) -> None:
        if trial.number >= 2:  # type: ignore[attr-defined]
            raise Stop

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(Stop):
        run_search(ev, n_trials=7, storage=storage, population_size=4, callbacks=[stop_after_3], log=None)
    first = open_study(storage, "shiftaddaug_nas")
    done = [t for t in first.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    res = run_search(ev, n_trials=7, storage=storage, population_size=4, log=None)
    complete = [t for t in res.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 7 and res.trials_run == 4
    assert [t.params for t in complete[:3]] == [t.params for t in done]
    again = run_search(ev, n_trials=7, storage=storage, population_size=4, log=None)
    assert again.trials_run == 0
    with pytest.raises(ValueError, match="different settings"):
        run_search(ev, n_trials=8, storage=storage, objective="macs", log=None)


def test_stage2_select_mode_search(data: tuple[torch.Tensor, ...], supernet: Supernet, tmp_path: Path) -> None:
    deep = supernet.space.max_arch("shift")
    ev = ArchEvaluator(supernet, data[0], data[2], data[3], recal_images=100, deep=deep)
    res = run_search(ev, mode="select", n_trials=5, out_dir=str(tmp_path), population_size=4, log=None)
    assert res.best is not None and res.best.selection is not None
    assert res.best.arch == res.best.selection.target_arch(deep)
    assert set(res.study.trials[0].params) == {"keep_s0_b1", "keep_s1_b1", "keep_s2_b1"}


# ------------------------------------------------------------------------------------------------ stage 2
def test_stage2_target_depth_augmentation_and_export() -> None:
    torch.manual_seed(2)
    net = Supernet(SPACE).eval()
    _randomise_bn(net)
    deep = SPACE.max_arch()
    with pytest.raises(ValueError, match="first block"):
        TargetSelection(((False, True), (True, True), (True, True)))
    sel = TargetSelection(((True, False), (True, True), (True, False)))
    target_arch = sel.target_arch(deep)
    assert target_arch.depths == (1, 2, 1)
    deep_model = net.extract(deep)
    target = drop_unselected(deep_model, deep, sel)
    assert len(deep_model.blocks[1]) == 2  # input untouched
    ref = build_efficientnet(target_arch, num_classes=10, in_chans=1)
    ref.load_state_dict(target.state_dict())  # re-indexed exactly like the target arch's own model
    x = torch.randn(2, 1, 16, 16)
    wrapped = wrap_depth_augmentation(net.extract(deep), deep, sel)
    assert sum(isinstance(m, DepthAugBlock) for m in wrapped.modules()) == 2
    with set_mode(wrapped, Mode.TARGET):
        torch.testing.assert_close(wrapped(x), target(x))
    with set_mode(wrapped, Mode.AUGMENTED):
        torch.testing.assert_close(wrapped(x), deep_model(x))
    torch.testing.assert_close(export_target(wrapped)(x), target(x))
    # joint loss: the target pass skips the unselected blocks, the deep pass trains them
    wrapped.train()
    out = depth_aug_loss(wrapped, x, torch.tensor([1, 2]), nn.CrossEntropyLoss(), alpha=1.0)
    out["loss"].backward()
    assert wrapped.blocks[1][1].block.conv_pw.weight.grad is not None
    assert out["output"].shape == (2, 10)


def test_select_target_greedy_meets_constraint() -> None:
    deep = SPACE.max_arch()
    net = Supernet(SPACE).eval()
    full = arch_cost(net.extract(deep), deep, (1, 16, 16)).macs
    limit = Constraints(max_macs=full * 0.85)
    sel = select_target_greedy(deep, lambda a: limit.violation(arch_cost(net.extract(a), a, (1, 16, 16))))
    target = sel.target_arch(deep)
    assert arch_cost(net.extract(target), target, (1, 16, 16)).macs <= limit.max_macs
    assert sel.unselected()
    with pytest.raises(ValueError, match="no target"):
        select_target_greedy(deep, lambda a: 1.0)


def test_shiftadd_custom_depth_aug_hybrid_model(tmp_path: Path) -> None:
    from shiftaddaug_plugin.nas.stage2 import save_depth_aug

    deep = SPACE.max_arch("shift")
    sel = TargetSelection(((True, False), (True, True), (True, False)))
    path = tmp_path / "depth_aug.json"
    save_depth_aug(path, deep, sel)
    slim = timm.create_model("shiftadd_custom", arch=str(path), num_classes=10, in_chans=1)
    assert [len(s) for s in slim.blocks] == [1, 1, 2, 1]
    hybrid = timm.create_model("shiftadd_custom", arch=str(path), num_classes=10, in_chans=1, aug=True)
    wrapped = [m for m in hybrid.modules() if isinstance(m, DepthAugBlock)]
    assert len(wrapped) == 2
    assert {type(m.block.conv_pw).__name__ for m in wrapped} == {"HybridConv2d"}
    assert all(m.block.conv_pw.op == "mult" for m in wrapped)  # augmentation-only blocks stay multiplicative
    hybrid.eval()
    x = torch.randn(2, 1, 16, 16)
    with set_mode(hybrid, Mode.TARGET):
        y = hybrid(x)
    exported = export_target(hybrid)
    assert [len(s) for s in exported.blocks] == [1, 1, 2, 1]
    torch.testing.assert_close(exported(x), y)
    with pytest.raises(ValueError, match="arch="):
        timm.create_model("shiftadd_custom")


def test_convert_export_drops_depth_aug_blocks_and_renames_kept_layers() -> None:
    """``convert.export``'s protocol (``DepthAugBlock.export() -> None``): the block leaves its ``nn.Sequential``
    (re-indexed), the target output is unchanged, and the kept-multiplicative names follow the re-indexing so
    ``audit`` stays exact."""
    from shiftaddaug_plugin.convert import ConvertConfig, audit, convert, export
    from shiftaddaug_plugin.convert.export import EXPORT_INFO_ATTR

    def block() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          DepthAugBlock(block()), block(), nn.Conv2d(8, 8, 1))
    hybrid = convert(dense, ConvertConfig(op="shift", op_overrides={r"4\.0": "mult"}),
                     example_input=torch.zeros(1, 1, 8, 8)).eval()
    assert set(hybrid._shiftaddaug_plan.kept_mult) == {"0", "4.0"}
    slim = export(hybrid)
    assert not any(isinstance(m, DepthAugBlock) for m in slim.modules()) and len(slim) == 5
    assert type(slim[3][0]) is nn.Conv2d and type(slim[4]).__name__ == "ShiftConv2d"
    assert set(getattr(slim, EXPORT_INFO_ATTR).kept_mult) == {"0", "3.0"}  # '4.0' re-indexed to '3.0'
    assert {e.name for e in audit(slim).allowed} == {"0", "3.0"}  # and nothing unexpected (audit would raise)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), set_mode(hybrid, Mode.TARGET):
        torch.testing.assert_close(slim(x), hybrid(x), rtol=0, atol=0)
    assert len(hybrid) == 6 and isinstance(hybrid[3], DepthAugBlock)  # input untouched

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 1)
            self.extra = DepthAugBlock(nn.Identity())

    with pytest.raises(ValueError, match="nn.Sequential"):
        export(Holder())


def test_models_import_registers_shiftadd_custom_without_optuna() -> None:
    probe = ("import sys, timm, shiftaddaug_plugin.models; "
             "print(int('shiftadd_custom' in timm.list_models('shiftadd_*')), int('optuna' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["1", "0"]


# ------------------------------------------------------------------------------------------------ CLI / workers
def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "shiftaddaug_plugin.nas.cli", "--threads", "1", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_share_one_sqlite_study_and_cli_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "supernet.pth"
    save_supernet(Supernet(SPACE, 10, 1), str(ckpt), img_size=16, train_images=200, holdout_images=100, seed=0)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [_cli(["search", "--supernet", str(ckpt), "--out-dir", str(tmp_path / f"w{w}"), "--storage", storage,
                   "--n-trials", "8", "--population", "4", "--worker", str(w), "--recal-images", "100",
                   "--max-macs", "1e9"], tmp_path) for w in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    study = optuna.load_study(study_name="nas-arch", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert 8 <= len(complete) <= 9  # MaxTrialsCallback: at most one extra trial per concurrent worker
    assert all(any(f"trial #{n} " in out for out in outputs) for n in (t.number for t in complete))
    evaluated = [json.dumps(t.params, sort_keys=True) for t in complete if t.user_attrs.get("duplicate_of") is None]
    assert len(evaluated) == len(set(evaluated))
    for w in (0, 1):
        out_dir = tmp_path / f"w{w}"
        arch = Arch.from_json(out_dir / "arch.json")
        SPACE.validate(arch)
        assert (out_dir / "pareto.png").stat().st_size > 1000
        assert "shiftadd_custom" in outputs[w]
