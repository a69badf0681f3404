"""tools/nas_short_proxy.py: the short-training proxy runs (fake trainer) and the two rank correlations."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
short_proxy = importlib.import_module("nas_short_proxy")

# candidate -> (supernet proxy, trained mean, short-training top-1 of the fake trainer)
_CANDIDATES = {"proxy-1": (78.0, 73.0, 61.0), "proxy-2": (77.0, 73.5, 62.0), "proxy-3": (76.0, 74.0, 63.0),
               "proxy-4": (75.0, 74.5, 64.0)}


def _folder(tmp_path: Path) -> Path:
    results = tmp_path / "nas-small"
    (results / "nas" / "proxy").mkdir(parents=True)
    runs = [{"group": "nas-proxy", "row": row, "seed": seed, "metric": trained + (0.1 * seed if row != "proxy-4" else
                                                                                     -5.0 * seed)}
            for row, (_, trained, _) in _CANDIDATES.items() for seed in (0, 1, 2)]
    (results / "results.json").write_text(json.dumps({"meta": {"budget": "small"}, "runs": runs}))
    points = [{"row": row, "proxy": sup, "trained": trained, "energy_uj": 1.0}
              for row, (sup, trained, _) in _CANDIDATES.items()]
    (results / "nas_report.json").write_text(json.dumps({"proxy_correlation": {"points": points}}))
    return results


def _fake_command(seen: list) -> Any:
    def command(spec: Any, budget: Any, runs_dir: Path) -> list[str]:
        seen.append((spec.row, budget.epochs, budget.warmup_epochs, budget.holdout, runs_dir.name))
        top1 = _CANDIDATES.get(spec.row, (0, 0, 50.0))[2]
        summary = {"status": "finished", "exported_top1": top1, "eval_top1": top1, "export_matches_eval": True,
                   "train_time_s": 0.1, "cost": {"macs": 1, "mults": 0, "shifts": 1, "adds": 1, "params": 1,
                                                 "energy_uj": 1.0}}
        code = ("import pathlib, sys; out = pathlib.Path(sys.argv[1]); "
                "out.joinpath('summary.json').write_text(sys.argv[2]); print('done: fake')")
        return [sys.executable, "-c", code, str(runs_dir / spec.name), json.dumps(summary)]

    return command


def test_short_runs_use_the_held_out_split_and_rank_against_the_trained_means(tmp_path: Path) -> None:
    results, seen = _folder(tmp_path), []
    payload = short_proxy.run(results, epochs=2, seed=0, jobs=2, command_fn=_fake_command(seen))
    assert {s[1:] for s in seen} == {(2, 1, True, "runs-short-proxy")} and len(seen) == 6
    # supernet proxy ranks the trained accuracy backwards, the short proxy in order
    assert payload["n"] == 4
    assert payload["kendall_tau_supernet"] == pytest.approx(-1.0)
    assert payload["kendall_tau_short"] == pytest.approx(1.0)
    assert json.loads((results / "short_proxy.json").read_text())["kendall_tau_short"] == pytest.approx(1.0)
    # seed 0 ranks proxy-4 first, the mean of seeds 1 and 2 last (its later seeds collapse): tau 0; seeds 1 and 2
    # agree with the others' mean: tau 1
    split = payload["seed_split_tau"]
    assert split["per_seed"] == {0: pytest.approx(0.0), 1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert split["mean"] == pytest.approx(2 / 3)
    seen.clear()  # finished runs are not trained again
    short_proxy.run(results, epochs=2, seed=0, jobs=1, command_fn=_fake_command(seen))
    assert seen == []


def test_one_epoch_has_no_warm_up_and_a_missing_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    table = json.loads((_folder(tmp_path) / "results.json").read_text())
    _, budget = short_proxy.short_budget(table, 1)
    assert (budget.epochs, budget.warmup_epochs, budget.eval_interval, budget.holdout) == (1, 0, 1, True)
    with pytest.raises(SystemExit):
        short_proxy.main(["--results", str(tmp_path / "nowhere")])
    assert "run tools/reproduce.py with the nas-proxy group" in capsys.readouterr().err
