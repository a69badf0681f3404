"""The NAS groups of tools/reproduce.py: stage commands, resume, proxy picks, commands of the searched rows, pairing
with the hand-designed rows, the proxy correlation and the report; one real run of every stage at toy size."""
from __future__ import annotations

import importlib
import importlib.util
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("reproduce_nas_under_test", REPO / "tools" / "reproduce.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rp = _load()
stages = importlib.import_module("repro.nas_stages")
nas_report = importlib.import_module("repro.nas_report")
SMALL = rp.BUDGETS["small"]
LIMITS = {"model": "shiftadd_mcunet", "op": "shift", "img_size": 32, "energy_uj": 2.5, "peak_kb": 40.0, "macs": 1}


def _tiny_archs(n: int) -> list[dict[str, Any]]:
    from shiftaddaug_plugin.nas.space import SPACE_PRESETS

    rng = random.Random(0)
    return [SPACE_PRESETS["tiny"].random_arch(rng).to_dict() for _ in range(n)]


def _fake_stage_run(calls: list[str], fail: str = "") -> Any:
    """Writes each stage's output file as the CLI would (search-shift: candidates.json with 10 candidates)."""
    archs = _tiny_archs(10)

    def run(name: str, cmd: list[str], log: Path) -> int:
        calls.append(name)
        if name == fail:
            return 3
        out = Path(cmd[cmd.index("--out") + 1]) if name == "supernet" else Path(cmd[cmd.index("--out-dir") + 1])
        if name == "supernet":
            out.write_bytes(b"ckpt")
            return 0
        out.mkdir(parents=True, exist_ok=True)
        (out / ("depth_aug.json" if "select" in cmd else "arch.json")).write_text(json.dumps(archs[9]))
        cands = [{"trial": i, "accuracy": 50.0 + i, "cost": {"energy_uj": 1.0 + i / 10}, "arch": archs[i]}
                 for i in range(10)]
        (out / "candidates.json").write_text(json.dumps({"trials": 12, "feasible": 10, "candidates": cands,
                                                         "best": cands[-1]}))
        return 0

    return run


# ------------------------------------------------------------------------------------------------ stages
def test_stage_commands_carry_the_hand_designed_limits(tmp_path: Path) -> None:
    settings = stages.settings_for("medium", rp.BUDGETS["medium"])
    cmds = {name: (cmd, out) for name, cmd, out in stages.stage_commands(tmp_path, settings, LIMITS)}
    assert list(cmds) == ["supernet", "search-shift", "search-nasa", "select-shift"]
    sup = cmds["supernet"][0]
    assert sup[sup.index("--train-images") + 1] == "6000" and sup[sup.index("--epochs") + 1] == "12"

    def flag(name: str, key: str) -> str:
        cmd = cmds[name][0]
        return cmd[cmd.index(key) + 1]

    for name in ("search-shift", "search-nasa", "select-shift"):
        assert float(flag(name, "--max-energy-uj")) == 2.5 and float(flag(name, "--max-peak-kb")) == 40.0
    assert flag("search-shift", "--ops") == "shift" and flag("search-nasa", "--ops") == "mult,shift,adder"
    assert flag("select-shift", "--mode") == "select"
    assert flag("select-shift", "--deep-arch") == str(tmp_path / "deep" / "arch.json")
    assert cmds["select-shift"][1].name == "depth_aug.json" and cmds["search-shift"][1].name == "arch.json"


def test_prepare_runs_missing_stages_in_order_resumes_and_stops_on_failure(tmp_path: Path) -> None:
    calls: list[str] = []
    lines: list[str] = []
    assert not stages.prepare_nas(tmp_path, "small", SMALL, run=_fake_stage_run(calls, fail="search-nasa"),
                                  limits_fn=lambda img: dict(LIMITS), print_fn=lines.append)
    assert calls == ["supernet", "search-shift", "search-nasa"]
    assert any("search-nasa FAILED" in line for line in lines)
    assert json.loads((tmp_path / "nas" / "limits.json").read_text())["energy_uj"] == 2.5
    calls.clear()
    assert stages.prepare_nas(tmp_path, "small", SMALL, run=_fake_stage_run(calls),
                              limits_fn=lambda img: pytest.fail("limits are read back from limits.json"),
                              print_fn=lines.append)
    assert calls == ["search-nasa", "select-shift"]  # finished stages are not rerun
    from shiftaddaug_plugin.nas.space import SPACE_PRESETS, Arch

    deep, target = Arch.from_json(tmp_path / "nas" / "deep" / "arch.json"), Arch.from_dict(_tiny_archs(10)[9])
    assert deep.depths == (SPACE_PRESETS["mcunet"].max_depth,) * len(target.stages)  # every stage at the largest depth
    for d, t in zip(deep.stages, target.stages):  # the target's blocks first, then its last block repeated
        assert d.blocks[:len(t.blocks)] == t.blocks and set(d.blocks[len(t.blocks):]) <= {t.blocks[-1]}
    proxies = sorted((tmp_path / "nas" / "proxy").glob("arch_*.json"))
    assert len(proxies) == importlib.import_module("repro.plan").NAS_PROXY_ARCHS == 6
    trials = [json.loads(p.read_text())["search"]["trial"] for p in proxies]
    assert trials[0] == 9  # the highest proxy (the search's choice) is among them
    calls.clear()
    assert stages.prepare_nas(tmp_path, "small", SMALL, run=_fake_stage_run(calls), print_fn=lines.append)
    assert calls == []


def test_pick_spread_covers_the_proxy_range() -> None:
    cands = [{"trial": t, "accuracy": float(a)} for t, a in enumerate([5, 9, 1, 7, 3, 8, 2, 6, 4, 0])]
    picked = stages.pick_spread(cands, 4)
    assert [c["accuracy"] for c in picked] == [9.0, 6.0, 3.0, 0.0]
    assert stages.pick_spread(cands[:3], 4) == sorted(cands[:3], key=lambda c: -c["accuracy"])
    assert [c["accuracy"] for c in stages.pick_spread(cands, 1)] == [9.0]


def test_nas_rows_train_the_searched_arch_with_mcunet_widths(tmp_path: Path) -> None:
    runs = tmp_path / "res" / "runs"
    plan = {r.row: r for r in rp.expand_plan(["nas-mcunet", "nas-proxy"], SMALL, seeds=[1])}
    direct = rp.build_command(plan["NAS Shift"], SMALL, runs)
    aug = rp.build_command(plan["NAS ShiftAug+depth-aug"], SMALL, runs)
    assert direct[direct.index("--model") + 1] == "shiftadd_custom"
    assert f"arch={(tmp_path / 'res' / 'nas' / 'search-shift' / 'arch.json').resolve()}" in direct
    assert f"arch={(tmp_path / 'res' / 'nas' / 'select-shift' / 'depth_aug.json').resolve()}" in aug
    assert "--no-aug" in direct and "--no-aug" not in aug
    i = aug.index("--aug-width-mult-list")
    assert aug[i + 1:i + 4] == ["1.0", "1.6", "2.2"]
    proxy = rp.build_command(plan["proxy-3"], SMALL, runs)
    assert f"arch={(tmp_path / 'res' / 'nas' / 'proxy' / 'arch_3.json').resolve()}" in proxy
    mcunet = rp.expand_plan(["main-mcunet"], SMALL, seeds=[1], rows=["Shift"])[0]
    ref = rp.build_command(mcunet, SMALL, runs)
    # same recipe as the hand-designed row: only the model (and its arch) differ
    strip = lambda cmd: [a for a in cmd if not a.startswith(("arch=", "shiftadd_", "custom_", "mcunet_"))]  # noqa: E731
    assert strip(direct) == strip(ref)


def _rec(group: str, model: str, row: str, seed: int, metric: float, arch: str = "") -> dict[str, Any]:
    return {"group": group, "model": model, "row": row, "seed": seed, "metric": metric, "arch": arch}


def test_searched_rows_pair_with_the_hand_designed_rows_of_the_same_seed() -> None:
    records = [_rec("main-mcunet", "shiftadd_mcunet", "Shift", 0, 70.0),
               _rec("main-mcunet", "shiftadd_mcunet", "Shift", 1, 72.0),
               _rec("main-mcunet", "shiftadd_mcunet", "ShiftAug", 0, 71.0),
               _rec("nas-mcunet", "shiftadd_custom", "NAS Shift", 0, 73.0),
               _rec("nas-mcunet", "shiftadd_custom", "NAS Shift", 1, 71.0),
               _rec("nas-mcunet", "shiftadd_custom", "NAS ShiftAug", 0, 74.5),
               _rec("main-mbv2", "shiftadd_mbv2_tiny", "Shift", 0, 10.0)]
    diffs = {(d["a"], d["b"]): d for d in rp.paired_differences(records)}
    d = diffs[("NAS Shift", "Shift (mcunet)")]
    assert d["b_model"] == "shiftadd_mcunet" and d["diffs"] == [3.0, -1.0] and d["wins"] == 1
    assert diffs[("NAS ShiftAug", "ShiftAug (mcunet)")]["diffs"] == [3.5]
    assert diffs[("NAS ShiftAug", "NAS Shift")]["diffs"] == [1.5]  # within the searched model
    assert diffs[("ShiftAug", "Shift")]["diffs"] == [1.0]


def test_kendall_tau_values() -> None:
    assert nas_report.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert nas_report.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,2) C, (1,3) C, (2,3) D -> (2 - 1) / 3
    assert nas_report.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # one tie in y: C=2, D=0, ties_y=1 -> 2 / sqrt(3 * 2)
    assert nas_report.kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / 6 ** 0.5)
    with pytest.raises(ValueError, match="equally long"):
        nas_report.kendall_tau([1, 2], [1])


def test_nas_report_correlation_search_curves_and_markdown(tmp_path: Path) -> None:
    calls: list[str] = []
    assert stages.prepare_nas(tmp_path, "small", SMALL, run=_fake_stage_run(calls), limits_fn=lambda img: dict(LIMITS),
                              print_fn=lambda s: None)
    proxies = sorted((tmp_path / "nas" / "proxy").glob("arch_*.json"))
    # trained top-1 = the proxy's order except the last two swapped
    proxy_acc = [json.loads(p.read_text())["search"]["accuracy_proxy"] for p in proxies]
    trained = [80.0 - i for i in range(len(proxies))]
    trained[-1], trained[-2] = trained[-2], trained[-1]
    records = [_rec("nas-proxy", "shiftadd_custom", f"proxy-{i + 1}", 0, t, f"nas/proxy/arch_{i + 1}.json")
               for i, t in enumerate(trained)]
    payload = nas_report.write_nas_report(records, tmp_path, plot=True)
    assert payload is not None
    corr = payload["proxy_correlation"]
    n = len(proxies)
    assert corr["n"] == n and corr["kendall_tau"] == pytest.approx(1 - 4 / (n * (n - 1)))  # one discordant pair
    assert [p["proxy"] for p in corr["points"]] == sorted(proxy_acc, reverse=True)
    curve = payload["searches"]["search-shift"]
    assert curve["trials"] == list(range(12)) and curve["best_proxy"][-1] == 59.0
    assert curve["best_proxy"] == sorted(curve["best_proxy"])  # best-so-far never decreases
    assert (tmp_path / "nas_search.png").read_bytes()[:4] == b"\x89PNG"
    md = nas_report.format_nas_markdown(payload)
    assert "Kendall tau = " in md and "energy 2.5 uJ" in md and "| search-shift | 12 | 10 | 9 |" in md
    assert json.loads((tmp_path / "nas_report.json").read_text())["limits"]["peak_kb"] == 40.0


def test_nas_front_keeps_rows_near_the_limit_and_is_plotted(tmp_path: Path) -> None:
    def row(group: str, name: str, energy: float | None, metric: str = "top1") -> dict:
        return {"group": group, "row": name, "metric_name": metric, "energy_uj": energy, "mean": 70.0, "std": 0.5,
                "n": 3}

    rows = [row("main-mcunet", "Shift", 2.5), row("main-mcunet", "Mult", 11.0), row("nas-mcunet", "NAS Shift", 1.6),
            row("nas-proxy", "proxy-1", 2.8), row("nas-proxy", "proxy-2", 2.9), row("main-mbv2", "Shift", 2.0),
            row("seg", "Shift", 1.0, metric="mIoU"), row("nas-mcunet", "NASA Shift", None)]
    points = nas_report.front_points(rows, limit_uj=2.5)
    assert [(p["group"], p["row"]) for p in points] == [("main-mcunet", "Shift"), ("nas-mcunet", "NAS Shift"),
                                                        ("nas-proxy", "proxy-1")]  # 2.8 <= 1.15 * 2.5 < 2.9
    nas_report.plot_nas_front(points, 2.5, tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_reference_limits_match_the_exported_network_cost() -> None:
    import timm

    import shiftaddaug_plugin.models  # noqa: F401
    from shiftaddaug_plugin.cost import count_ops
    from shiftaddaug_plugin.layers import ShiftConv2d

    limits = stages.reference_limits(32)
    net = timm.create_model("shiftadd_mcunet", num_classes=10, in_chans=1, op="shift")
    assert any(isinstance(m, ShiftConv2d) for m in net.modules())  # the MF target, not the multiplicative net
    mult = count_ops(timm.create_model("shiftadd_mcunet", num_classes=10, in_chans=1), (1, 32, 32))
    assert limits["macs"] == mult.macs
    assert 0 < limits["energy_uj"] < 0.5 * mult.energy_pj * 1e-6  # shifts are far cheaper than multiplications
    assert limits["peak_kb"] == mult.peak_activation_bytes / 1024


@pytest.mark.slow
def test_every_stage_runs_for_real_at_toy_size(tmp_path: Path) -> None:
    """The real CLI commands (supernet, 3 searches, deep arch, proxy picks) on the 'tiny' space, 16 px, few trials."""
    settings = stages.NasSettings("tiny", 16, 200, 100, 1, 3, 2, recal_images=50, supernet_batch_size=64)
    loose = {"model": "shiftadd_mcunet", "op": "shift", "energy_uj": 10.0, "peak_kb": 1e4}
    lines: list[str] = []
    assert stages.prepare_nas(tmp_path, "small", SMALL, settings=settings, limits_fn=lambda img: dict(loose),
                              print_fn=lines.append), "\n".join(lines)
    from shiftaddaug_plugin.nas.space import Arch, load_arch

    nas = tmp_path / "nas"
    assert {o for a in (Arch.from_json(nas / "search-nasa" / "arch.json"),) for o in a.ops()} <= {"mult", "shift",
                                                                                                   "adder"}
    assert set(Arch.from_json(nas / "search-shift" / "arch.json").ops()) == {"shift"}
    assert load_arch(nas / "select-shift" / "depth_aug.json") is not None
    assert len(list((nas / "proxy").glob("arch_*.json"))) >= 1
    payload = nas_report.write_nas_report([], tmp_path, plot=False)
    assert payload is not None and set(payload["searches"]) == set(nas_report.SEARCHES)


def test_nas_stages_only_needs_a_nas_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert rp.main(["--nas-stages-only", "--only", "main-mcunet", "--list"]) == 2
    assert "needs a nas-* group" in capsys.readouterr().err


def test_stage_paths_are_absolute_for_a_relative_results_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages run with the repository as working directory: a relative --results must not move their output."""
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []

    def run(name: str, cmd: list[str], log: Path) -> int:
        seen.append(cmd)
        return _fake_stage_run([])(name, cmd, log)

    assert stages.prepare_nas(Path("rel"), "small", SMALL, run=run, limits_fn=lambda img: dict(LIMITS),
                              print_fn=lambda s: None)
    outs = [Path(c[c.index("--out") + 1]) if "--out" in c else Path(c[c.index("--out-dir") + 1]) for c in seen]
    assert len(outs) == 4 and all(o.is_absolute() and str(o).startswith(str(tmp_path / "rel" / "nas")) for o in outs)
