"""Machinery of tools/reproduce.py: plan expansion, commands, resume (finished runs skipped, partial runs resumed),
parallel execution with fake one-shot runs, aggregation (mean / sample std / paired differences) and report writing.
No training happens here: fake runs are tiny Python subprocesses that write a ``summary.json``."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("reproduce_under_test", REPO / "tools" / "reproduce.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


rp = _load()
rp_curves = importlib.import_module("repro.curves")  # tools/ is on sys.path once reproduce.py is loaded
rp_provenance = importlib.import_module("repro.provenance")
SMALL = rp.BUDGETS["small"]

# fake per-run accuracies: (row, seed) -> top-1; costs per row
_TOP1 = {("Mult", 0): 80.0, ("Mult", 1): 82.0, ("Shift", 0): 70.0, ("Shift", 1): 73.0,
         ("ShiftAug", 0): 71.5, ("ShiftAug", 1): 72.0}
_COST = {"mult": dict(macs=1000, mults=1000, shifts=0, adds=1000, params=10, energy_uj=4.6e-3),
         "shift": dict(macs=1000, mults=10, shifts=990, adds=1000, params=10, energy_uj=1.1e-3)}


def _fake_csv(spec: Any) -> str:
    """A two-epoch summary.csv as the trainer writes it (0-based epochs, evaluated after the second only)."""
    top1 = _TOP1[(spec.row, spec.seed)]
    return ("epoch,train_loss_target,train_loss_aug,train_top1,eval_top1,eval_loss,eval_ema_top1,lr,width_aug,"
            "mf_layers,time\n"
            f"0,{1.5 + spec.seed},,40.0,,,,0.05,1,3,1.0\n"
            f"1,{0.5 + spec.seed},,60.0,{top1},0.9,,0.01,0,3,1.0\n")


def _fake_command(record: Path) -> Any:
    """command_fn writing a finished summary.json (values from _TOP1) and logging which run executed."""

    def command(spec: Any, budget: Any, runs_dir: Path) -> list[str]:
        summary = {"status": "finished", "exported_top1": _TOP1[(spec.row, spec.seed)],
                   "eval_top1": _TOP1[(spec.row, spec.seed)], "export_matches_eval": True, "train_time_s": 0.1,
                   "cost": _COST[spec.op]}
        code = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); "
                "out.joinpath('summary.json').write_text(sys.argv[2]); "
                f"out.joinpath('summary.csv').write_text({_fake_csv(spec)!r}); "
                "open(sys.argv[3], 'a').write(out.name + '\\n'); print('epoch 1/1: fake'); print('done: fake')")
        return [sys.executable, "-c", code, str(runs_dir / spec.name), json.dumps(summary), str(record)]

    return command


def _plan() -> list[Any]:
    return rp.expand_plan(["main-mcunet"], SMALL, seeds=[0, 1], rows=["Mult", "Shift", "ShiftAug"])


# ------------------------------------------------------------------------------------------------ plan
def test_plan_expansion_counts_names_and_filters() -> None:
    full = rp.expand_plan(list(rp.GROUPS), SMALL)
    per_group = {g: sum(1 for r in full if r.group == g) for g in rp.GROUPS}
    assert per_group["main-mcunet"] == 6 * len(SMALL.seeds)
    assert per_group["main-mbv2"] == 6 * len(SMALL.seeds)
    assert per_group["ablation-aug-dims"] == 2 * len(SMALL.seeds)
    assert per_group["seg"] == 5 * len(SMALL.seg_seeds)
    assert len({r.name for r in full}) == len(full)
    plan = _plan()
    assert [(r.row, r.seed) for r in plan] == [("Mult", 0), ("Shift", 0), ("ShiftAug", 0), ("Mult", 1),
                                               ("Shift", 1), ("ShiftAug", 1)]  # seed-major
    assert {(r.row, r.op, r.aug) for r in plan} == {("Mult", "mult", False), ("Shift", "shift", False),
                                                   ("ShiftAug", "shift", True)}
    assert rp.parse_only("main-mcunet, seg") == ["main-mcunet", "seg"]
    assert rp.parse_only("") == list(rp.GROUPS)
    with pytest.raises(ValueError, match="unknown experiment group"):
        rp.parse_only("main-resnet")
    with pytest.raises(ValueError, match="--rows"):
        rp.expand_plan(["main-mcunet"], SMALL, rows=["ShiftAugg"])


def test_build_command_flags(tmp_path: Path) -> None:
    plan = {r.row: r for r in rp.expand_plan(["main-mbv2", "ablation-remap", "ablation-aug-dims"], SMALL, seeds=[3])}
    shift = rp.build_command(plan["Shift"], SMALL, tmp_path)
    aug = rp.build_command(plan["ShiftAug"], SMALL, tmp_path)
    assert "--no-aug" in shift and "--no-aug" not in aug
    assert shift[shift.index("--model") + 1] == "shiftadd_mbv2_tiny"
    assert shift[shift.index("--seed") + 1] == "3" and shift[shift.index("--epochs") + 1] == str(SMALL.epochs)
    i = aug.index("--aug-width-mult-list")
    assert aug[i + 1:i + 4] == ["1.0", "1.8", "2.6"]  # MBV2-Tiny NetAug list
    remap = rp.build_command(plan["AddAug+remap"], SMALL, tmp_path)
    assert "op=adder" in remap and "convert_kwargs={'remap':True}" in remap
    width_only = rp.build_command(plan["ShiftAug width-only"], SMALL, tmp_path)
    # the ablation's override comes after the preset flag, so argparse keeps it
    assert width_only[-2:] == ["--aug-expand-list", "1.0"]
    # same recipe for every row: only operator / augmentation / ablation flags differ (the direct row passes no
    # augmentation flag: with --no-aug the trainer refuses them)
    assert "--aug-width-mult-list" not in shift
    del aug[i:i + 4]
    strip = {"--no-aug", "op=shift"}
    assert [a for a in shift if a not in strip and "mbv2tiny_" not in a] == \
        [a for a in aug if a not in strip and "mbv2tiny_" not in a]
    # a partial run (checkpoint, no finished summary) resumes
    (tmp_path / plan["Shift"].name).mkdir()
    (tmp_path / plan["Shift"].name / "last.pth.tar").write_bytes(b"x")
    assert rp.run_status(plan["Shift"], tmp_path) == "partial"
    resumed = rp.build_command(plan["Shift"], SMALL, tmp_path)
    assert resumed[-2:] == ["--resume", str(tmp_path / plan["Shift"].name / "last.pth.tar")]


def test_tiny_width_rows_pass_the_width_and_pair_within_the_group(tmp_path: Path) -> None:
    plan = {r.row: r for r in rp.expand_plan(["regime-tiny-mcunet"], SMALL, seeds=[1])}
    assert sorted(plan) == ["Mult 0.35x", "NetAug 0.35x", "Shift 0.35x", "ShiftAug 0.35x"]
    shift, aug = (rp.build_command(plan[row], SMALL, tmp_path) for row in ("Shift 0.35x", "ShiftAug 0.35x"))
    i = shift.index("--model-kwargs")
    assert shift[i + 1:i + 3] == ["op=shift", "width_mult=0.35"] and "--no-aug" in shift
    assert "width_mult=0.35" in aug and "--no-aug" not in aug and plan["ShiftAug 0.35x"].name == \
        "mcunet_shiftaug-0-35x_s1"
    pairs = dict(rp.PAIRS)
    assert pairs["ShiftAug 0.35x"] == "Shift 0.35x" and pairs["NetAug 0.35x"] == "Mult 0.35x"


def test_holdout_split_and_sort_ablation_flags(tmp_path: Path) -> None:
    plan = {r.row: r for r in rp.expand_plan(["main-mcunet", "ablation-sort-scope", "ablation-sort-remap"], SMALL,
                                             seeds=[0])}
    test_cmd = rp.build_command(plan["Shift"], SMALL, tmp_path)
    holdout = rp.build_command(plan["Shift"], dataclasses.replace(SMALL, holdout=True), tmp_path)
    assert "--holdout-val" not in test_cmd and test_cmd[test_cmd.index("--val-subset") + 1] == str(SMALL.val_subset)
    assert "--val-subset" not in holdout and holdout[holdout.index("--holdout-val") + 1] == str(SMALL.val_subset)
    scope = rp.build_command(plan["AddAug sort-augmented"], SMALL, tmp_path)
    assert scope[-2:] == ["--sort-scope", "augmented"] and "op=adder" in scope
    assert rp.build_command(plan["AddAug no-sort-remap"], SMALL, tmp_path)[-1] == "--no-sort-remap"
    pairs = dict(rp.PAIRS)
    assert pairs["AddAug sort-augmented"] == "AddAug" and pairs["AddAug no-sort-remap"] == "AddAug"
    mbv2 = rp.expand_plan(["ablation-sort-remap-mbv2"], SMALL, seeds=[0])[0]
    cmd = rp.build_command(mbv2, SMALL, tmp_path)
    assert mbv2.name == "mbv2tiny_addaug-no-sort-remap_s0" and cmd[-1] == "--no-sort-remap"
    assert cmd[cmd.index("--model") + 1] == "shiftadd_mbv2_tiny" and "1.8" in cmd  # MobileNetV2-Tiny's width list
    scope_mbv2 = {r.row: r for r in rp.expand_plan(["ablation-sort-scope-mbv2"], SMALL, seeds=[0])}
    no_sort = rp.build_command(scope_mbv2["ShiftAug no-sort"], SMALL, tmp_path)
    assert no_sort[-2:] == ["--sort-interval", "0"] and no_sort[no_sort.index("--model") + 1] == "shiftadd_mbv2_tiny"
    assert pairs["ShiftAug no-sort"] == "ShiftAug"
    sort_augmented = rp.build_command(scope_mbv2["ShiftAug sort-augmented"], SMALL, tmp_path)
    assert sort_augmented[-2:] == ["--sort-scope", "augmented"]


def test_seg_command_baseline_and_status(tmp_path: Path) -> None:
    seg = {r.row: r for r in rp.expand_plan(["seg"], SMALL)}
    direct = rp.build_command(seg["Add"], SMALL, tmp_path)
    aug = rp.build_command(seg["AddAug"], SMALL, tmp_path)
    assert "model.convert_cfg.op=adder" in direct and "model.convert_cfg.op=adder" in aug
    assert "model.alpha=0.0" in direct and "model.alpha=0.0" not in aug
    assert f"train_cfg.max_iters={SMALL.seg_iters}" in aug
    assert rp.run_status(seg["Add"], tmp_path) == "new"
    out = tmp_path / seg["Add"].name / "20260101_000000" / "vis_data"
    out.mkdir(parents=True)
    out.joinpath("scalars.json").write_text('{"loss": 1.0, "step": 10}\n{"aAcc": 90.0, "mIoU": 41.5, "step": 300}\n')
    rp._finalize(seg["Add"], tmp_path, 0)
    assert rp.run_status(seg["Add"], tmp_path) == "finished"
    assert rp.collect_results([seg["Add"]], tmp_path)[0]["metric"] == pytest.approx(41.5)


def test_seg_real_data_commands_test_eval_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """seg-brain: the dataset's own splits (no num_images), val chooses, test reports through test_mmseg.py."""
    plan = rp.expand_plan(["seg-brain"], SMALL, seeds=[0], rows=["Shift", "ShiftAug"])
    by_row = {r.row: r for r in plan}
    cmd = rp.build_command(by_row["ShiftAug"], SMALL, tmp_path)
    assert str(rp.runs.SEG_CONFIGS["mbv2_tiny_fcn_brain"]) in cmd and not any("num_images" in c for c in cmd)
    test_cmd = rp.runs.seg_test_command(by_row["ShiftAug"], SMALL, tmp_path)
    assert test_cmd[1].endswith("test_mmseg.py") and test_cmd[3].endswith(f"iter_{SMALL.seg_iters}_mf_target.pth")
    log = "Iter(test) [2/2]  aAcc: 90.0  mIoU: 12.50  mAcc: 1\nlast  mIoU: 70.25  mAcc: 80"
    assert rp.runs.parse_miou(log) == 70.25
    assert rp.runs.parse_miou("no metric") is None
    ablation = rp.expand_plan(["ablation-seg-nuclei-sort"], SMALL, seeds=[0])
    assert rp.build_command(ablation[0], SMALL, tmp_path)[-1] == "custom_hooks.0.sort_interval=None"
    assert dict(rp.PAIRS)["ShiftAug no-sort"] == "ShiftAug"
    for spec, (val, wall) in zip(plan, ((60.0, 100.0), (61.5, 200.0))):
        out = tmp_path / spec.name / "20260101_000000" / "vis_data"
        out.mkdir(parents=True)
        out.joinpath("scalars.json").write_text(json.dumps({"mIoU": val, "step": SMALL.seg_iters}) + "\n")
        rp._finalize(spec, tmp_path, 0, wall)
    test_miou = {by_row["Shift"].name: 55.0, by_row["ShiftAug"].name: 57.25}

    def fake_run(cmd: list[str], **kwargs: Any) -> Any:
        name = Path(cmd[3]).parent.name
        return dataclasses.make_dataclass("Done", ["returncode", "stdout", "stderr"])(
            0, f"Iter(test) [2/2]  aAcc: 90.0  mIoU: {test_miou[name]:.2f}  mAcc: 1.0\n", "")

    monkeypatch.setattr(rp.runs.subprocess, "run", fake_run)
    assert rp.run_test_evals(plan, SMALL, tmp_path, log=lambda s: None) == 2
    records = rp.collect_results(plan, tmp_path, test_eval=True)
    assert [(r["metric"], r["holdout_miou"], r["train_time_s"]) for r in records] == [
        (55.0, 60.0, 100.0), (57.25, 61.5, 200.0)]
    rp.write_reports(plan, tmp_path, tmp_path / "res", "small", plot=False, test_eval=True)
    md = (tmp_path / "res" / "results_test.md").read_text()
    assert "Segmentation budget `small`: 300 iterations of batch 8" in md and "train_subset" not in md
    assert "| ShiftAug | 57.25 ± 0.00 | 1 | 57.25 | 200 |" in md and "| seg-brain | ShiftAug - Shift | +2.25 |" in md


# ------------------------------------------------------------------------------------------------ execution
def test_execute_skips_finished_runs_and_resumes(tmp_path: Path) -> None:
    plan = _plan()
    runs = tmp_path / "runs"
    record = tmp_path / "executed.txt"
    # one run finished beforehand (e.g. by an interrupted earlier invocation), one interrupted mid-way
    done_dir = runs / plan[0].name
    done_dir.mkdir(parents=True)
    done_dir.joinpath("summary.json").write_text(json.dumps({"status": "finished", "exported_top1": 80.0,
                                                             "cost": _COST["mult"]}))
    interrupted = runs / plan[1].name
    interrupted.mkdir()
    interrupted.joinpath("summary.json").write_text(json.dumps({"status": "interrupted"}))
    lines: list[str] = []
    out = rp.execute_plan(plan, SMALL, runs, jobs=2, command_fn=_fake_command(record), log=lines.append,
                          poll_s=0.02)
    executed = record.read_text().split()
    assert sorted(executed) == sorted(r.name for r in plan[1:])  # the finished one was skipped
    assert out["skipped"] == 1 and out["ran"] == len(plan) - 1 and out["failed"] == []
    assert all(rp.run_status(r, runs) == "finished" for r in plan)
    assert any("start" in line for line in lines) and any("epoch 1/1: fake" in line for line in lines)
    assert (runs / plan[1].name / "stdout.log").read_text().count("done: fake") == 1
    # provenance: each launched run records the code revision and machine; the skipped one records nothing
    launched = json.loads((runs / plan[1].name / "provenance.json").read_text())
    assert len(launched) == 1 and launched[0]["commit"] == rp_provenance.describe_environment(REPO)["commit"]
    assert launched[0]["torch"] and launched[0]["cpu"] and isinstance(launched[0]["dirty"], bool)
    assert not (done_dir / "provenance.json").exists()
    records = {r["name"]: r for r in rp.collect_results(plan, runs)}
    assert records[plan[1].name]["provenance"] == launched and records[plan[0].name]["provenance"] == []
    # second invocation: nothing left to do
    again = rp.execute_plan(plan, SMALL, runs, jobs=2, command_fn=_fake_command(record), log=lambda s: None,
                            poll_s=0.02)
    assert again["ran"] == 0 and record.read_text().split() == executed


def test_execute_reports_failures(tmp_path: Path) -> None:
    plan = _plan()[:1]

    def failing(spec: Any, budget: Any, runs_dir: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(5)"]

    out = rp.execute_plan(plan, SMALL, tmp_path, jobs=1, command_fn=failing, log=lambda s: None, poll_s=0.02)
    assert out["failed"] == [plan[0].name]
    assert rp.run_status(plan[0], tmp_path) == "new"
    with pytest.raises(ValueError, match="--jobs"):
        rp.execute_plan(plan, SMALL, tmp_path, jobs=0)


# ------------------------------------------------------------------------------------------------ reports
def test_reports_statistics_and_files(tmp_path: Path) -> None:
    plan = _plan()
    runs = tmp_path / "runs"
    rp.execute_plan(plan, SMALL, runs, jobs=2, command_fn=_fake_command(tmp_path / "rec.txt"),
                    log=lambda s: None, poll_s=0.02)
    payload = rp.write_reports(plan, runs, tmp_path, "small", plot=True)
    rows = {r["row"]: r for r in payload["rows"]}
    for label in ("Mult", "Shift", "ShiftAug"):
        values = [_TOP1[(label, s)] for s in (0, 1)]
        assert rows[label]["values"] == values
        assert rows[label]["mean"] == pytest.approx(statistics.fmean(values))
        assert rows[label]["std"] == pytest.approx(statistics.stdev(values))
    assert rows["Shift"]["mults"] == 10 and rows["Mult"]["energy_uj"] == pytest.approx(4.6e-3)
    diff = next(d for d in payload["paired_differences"] if d["a"] == "ShiftAug")
    assert diff["diffs"] == pytest.approx([1.5, -1.0]) and diff["wins"] == 1
    assert diff["mean"] == pytest.approx(0.25)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["meta"]["finished_runs"] == len(plan) and len(on_disk["runs"]) == len(plan)
    md = (tmp_path / "results.md").read_text()
    assert "| Shift | 71.50 ± 2.12 | 2 |" in md
    assert "| main-mcunet | ShiftAug - Shift | +0.25 |" in md
    png = tmp_path / "accuracy_energy.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # learning curves: each record carries its summary.csv, curves.png shows the mean over seeds
    shift0 = next(r for r in on_disk["runs"] if r["row"] == "Shift" and r["seed"] == 0)
    assert [p["epoch"] for p in shift0["curve"]] == [1, 2]
    assert shift0["curve"][0]["eval_top1"] is None and shift0["curve"][1]["eval_top1"] == _TOP1[("Shift", 0)]
    assert shift0["curve"][0]["width_aug"] == 1.0 and shift0["curve"][1]["train_loss_target"] == 0.5
    curves = rp_curves.mean_curves(on_disk["runs"], "eval_top1")
    assert curves[("shiftadd_mcunet", "Shift")] == [(2, pytest.approx(statistics.fmean(
        [_TOP1[("Shift", 0)], _TOP1[("Shift", 1)]])), 2)]
    assert rp_curves.mean_curves(on_disk["runs"], "train_loss_target")[("shiftadd_mcunet", "Mult")] == [
        (1, pytest.approx(2.0), 2), (2, pytest.approx(1.0), 2)]
    assert rp_curves.width_aug_end(on_disk["runs"]) == 1  # the fake curves augment in their first epoch only
    curves_png = tmp_path / "curves.png"
    assert curves_png.is_file() and curves_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reports_skip_unfinished_runs(tmp_path: Path) -> None:
    plan = _plan()
    (tmp_path / "runs" / plan[0].name).mkdir(parents=True)
    (tmp_path / "runs" / plan[0].name / "summary.json").write_text(json.dumps(
        {"status": "finished", "exported_top1": 80.0, "cost": _COST["mult"]}))
    (tmp_path / "runs" / plan[1].name).mkdir()
    (tmp_path / "runs" / plan[1].name / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    payload = rp.write_reports(plan, tmp_path / "runs", tmp_path, "small", plot=False)
    assert [r["row"] for r in payload["rows"]] == ["Mult"] and payload["rows"][0]["std"] == 0.0
    assert payload["paired_differences"] == []
    assert not (tmp_path / "accuracy_energy.png").exists()
    assert payload["runs"][0]["curve"] == []  # a run without summary.csv has an empty curve, no error
    assert not rp_curves.plot_curves(payload["runs"], tmp_path / "curves.png", "t")
    assert not (tmp_path / "curves.png").exists()


def test_ablation_rows_pair_with_main_rows_of_the_same_model() -> None:
    """An ablation row (own group) is compared with the main table's row of the same model and seed only."""
    def rec(group: str, model: str, row: str, seed: int, metric: float) -> dict[str, Any]:
        return {"group": group, "model": model, "row": row, "seed": seed, "metric": metric}

    records = [rec("main-mcunet", "shiftadd_mcunet", "AddAug", 0, 50.0),
               rec("main-mcunet", "shiftadd_mcunet", "AddAug", 1, 52.0),
               rec("ablation-remap", "shiftadd_mcunet", "AddAug+remap", 0, 53.0),
               rec("ablation-remap", "shiftadd_mcunet", "AddAug+remap", 2, 99.0),  # no partner for seed 2
               rec("main-mbv2", "shiftadd_mbv2_tiny", "AddAug", 0, 10.0)]       # other model: never paired
    diffs = rp.paired_differences(records)
    assert len(diffs) == 1
    d = diffs[0]
    assert (d["group"], d["model"], d["a"], d["b"]) == ("ablation-remap", "shiftadd_mcunet", "AddAug+remap", "AddAug")
    assert d["seeds"] == [0] and d["diffs"] == [3.0] and d["wins"] == 1


def test_test_eval_of_holdout_runs_reports_main_rows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holdout = dataclasses.replace(SMALL, holdout=True)
    plan = _plan() + rp.expand_plan(["ablation-sort-scope"], holdout, seeds=[0], rows=["ShiftAug sort-augmented"])
    plan += rp.expand_plan(["regime-tiny-mcunet"], holdout, seeds=[0], rows=["Shift 0.35x"])  # evaluated too
    runs = tmp_path / "runs"
    monkeypatch.setitem(_TOP1, ("ShiftAug sort-augmented", 0), 60.0)  # no leak into other tests
    monkeypatch.setitem(_TOP1, ("Shift 0.35x", 0), 55.0)
    rp.execute_plan(plan, holdout, runs, jobs=2, command_fn=_fake_command(tmp_path / "rec.txt"),
                    log=lambda s: None, poll_s=0.02)

    def fake_eval(spec: Any, budget: Any, runs_dir: Path) -> list[str]:  # test top-1 = held-out top-1 - 10
        line = f"validate x: m on fashion_mnist (2000 images): top1 {_TOP1[(spec.row, spec.seed)] - 10:.4f} loss 1"
        return [sys.executable, "-c", f"print({line!r})"]

    monkeypatch.setattr(rp.runs, "test_eval_command", fake_eval)  # tools/repro/runs.py calls it
    assert rp.run_test_evals(plan, holdout, runs, log=lambda s: None) == len(plan) - 1  # not the ablation row
    assert rp.run_test_evals(plan, holdout, runs, log=lambda s: None) == 0  # already evaluated
    payload = rp.write_reports(plan, runs, tmp_path, "small", plot=False, test_eval=True)
    rows = {r["row"]: r for r in payload["rows"]}
    assert "ShiftAug sort-augmented" not in rows
    assert rows["ShiftAug"]["values"] == [_TOP1[("ShiftAug", s)] - 10 for s in (0, 1)]
    assert (tmp_path / "results_test.md").is_file() and not (tmp_path / "results.md").exists()
    assert "held-out table" in (tmp_path / "results_test.md").read_text()


def test_provenance_appends_one_entry_per_launch(tmp_path: Path) -> None:
    rp_provenance.record_launch(tmp_path, {"commit": "a", "cpu": "x"})
    rp_provenance.record_launch(tmp_path, {"commit": "b", "cpu": "x"})  # a resumed run: a second launch
    assert [e["commit"] for e in rp_provenance.read_provenance(tmp_path)] == ["a", "b"]
    (tmp_path / "provenance.json").write_text("{not json")
    assert rp_provenance.read_provenance(tmp_path) == []  # an unreadable record is no record, not a crash
    outside = rp_provenance.describe_environment(tmp_path / "no-repo")
    assert outside["commit"] is None and outside["dirty"] is None
