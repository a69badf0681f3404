#!/usr/bin/env python
"""Would a few-epoch training proxy rank the NAS candidates better than the supernet proxy? (docs/nas.md)

Usage::

    python tools/nas_short_proxy.py --results results/nas-medium [--epochs 2] [--seed 0] [--jobs 2]

Trains the six ``nas-proxy`` candidates of a finished ``tools/reproduce.py`` NAS folder (their arch files under
``<results>/nas/proxy/``) for ``--epochs`` epochs with the folder's budget otherwise unchanged (same recipe and
seed; the training subset is drawn from the split minus the held-out images), evaluated on the **held-out** slice
of the training split, into ``<results>/runs-short-proxy/`` (resumable). Then compares, per candidate, the
supernet proxy (``nas_report.json``) and this short-training proxy with the trained top-1 of the full runs
(``results.json``, mean over seeds) by Kendall's τ-b, and writes ``<results>/short_proxy.json``. The ceiling any
proxy can reach is measured too: the τ-b of one seed's trained accuracy against the mean of the other seeds
(``seed_split_tau``); a full training run is the best proxy there is. The test split is never used to rank: only
the final trained accuracies come from the folder's own (reported) table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ -> the repro package

from repro.files import write_json_atomically  # noqa: E402
from repro.nas_report import kendall_tau  # noqa: E402
from repro.plan import BUDGETS, Budget, RunSpec, expand_plan  # noqa: E402
from repro.report import collect_results  # noqa: E402
from repro.runs import CommandFn, build_command, execute_plan  # noqa: E402

RUNS = "runs-short-proxy"


def short_budget(table: dict[str, Any], epochs: int) -> tuple[str, Budget]:
    """The folder's budget (``results.json`` meta) cut to ``epochs`` epochs, evaluated on the held-out split."""
    name = table["meta"]["budget"]
    if epochs < 1:
        raise ValueError(f"--epochs={epochs} must be >= 1")
    base = BUDGETS[name]
    return name, replace(base, epochs=epochs, warmup_epochs=min(base.warmup_epochs, epochs - 1),
                         eval_interval=epochs, holdout=True)


def compare(short: Sequence[dict[str, Any]], results: Path) -> dict[str, Any]:
    """Per candidate: supernet proxy, short-training proxy, trained mean; τ-b of each proxy with the trained mean."""
    report = json.loads((results / "nas_report.json").read_text())
    supernet = {p["row"]: p for p in report["proxy_correlation"]["points"]}
    short_top1 = {r["row"]: float(r["metric"]) for r in short}
    points = [{"row": row, "supernet_proxy": p["proxy"], "short_proxy": short_top1[row], "trained": p["trained"],
               "energy_uj": p.get("energy_uj")}
              for row, p in supernet.items() if row in short_top1]
    if len(points) < 2:
        raise ValueError(f"need at least two candidates with both proxies, got {len(points)}")
    trained = [p["trained"] for p in points]
    return {"n": len(points),
            "kendall_tau_supernet": kendall_tau([p["supernet_proxy"] for p in points], trained),
            "kendall_tau_short": kendall_tau([p["short_proxy"] for p in points], trained),
            "points": sorted(points, key=lambda p: -p["trained"])}


def seed_split_tau(table: dict[str, Any]) -> dict[str, Any]:
    """τ-b of each seed's trained top-1 of the ``nas-proxy`` rows (``results.json``) against the mean of the other
    seeds."""
    per_row: dict[str, dict[int, float]] = {}
    for rec in table.get("runs", []):
        if rec.get("group") == "nas-proxy":
            per_row.setdefault(rec["row"], {})[int(rec["seed"])] = float(rec["metric"])
    rows = sorted(per_row)
    seeds = sorted(set.intersection(*(set(v) for v in per_row.values()))) if per_row else []
    if len(rows) < 2 or len(seeds) < 2:
        return {"per_seed": {}, "mean": None}
    per_seed = {s: kendall_tau([per_row[r][s] for r in rows],
                               [sum(per_row[r][t] for t in seeds if t != s) / (len(seeds) - 1) for r in rows])
                for s in seeds}
    return {"per_seed": per_seed, "mean": sum(per_seed.values()) / len(per_seed)}


def run(results: Path, epochs: int, seed: int, jobs: int, command_fn: CommandFn = build_command) -> dict[str, Any]:
    table = json.loads((results / "results.json").read_text())
    name, budget = short_budget(table, epochs)
    plan: list[RunSpec] = expand_plan(["nas-proxy"], budget, seeds=[seed])
    runs_dir = results / RUNS  # its parent is the NAS folder: the rows' arch paths resolve there
    outcome = execute_plan(plan, budget, runs_dir, jobs=jobs, command_fn=command_fn)
    if outcome.get("failed"):
        raise RuntimeError(f"short-proxy runs failed: {outcome['failed']}; see {runs_dir}/<run>/stdout.log")
    payload = compare(collect_results(plan, runs_dir), results)
    payload.update(budget=name, epochs=epochs, seed=seed, split="holdout", seed_split_tau=seed_split_tau(table))
    write_json_atomically(results / "short_proxy.json", payload)
    return payload


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, required=True, help="a reproduce.py NAS folder (results.json, nas/)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    for needed in ("results.json", "nas_report.json", "nas/proxy"):
        if not (args.results / needed).exists():
            p.error(f"{args.results / needed} not found: run tools/reproduce.py with the nas-proxy group into "
                    f"{args.results} first")
    payload = run(args.results, args.epochs, args.seed, args.jobs)
    print(f"{'candidate':<10} {'supernet':>9} {'short':>7} {'trained':>8}")
    for pt in payload["points"]:
        print(f"{pt['row']:<10} {pt['supernet_proxy']:>9.2f} {pt['short_proxy']:>7.2f} {pt['trained']:>8.2f}")
    print(f"Kendall tau-b vs trained: supernet proxy {payload['kendall_tau_supernet']:+.2f}, "
          f"{args.epochs}-epoch proxy {payload['kendall_tau_short']:+.2f}; one trained seed against the others "
          f"(the ceiling): {_fmt(payload['seed_split_tau']['mean'])} -> {args.results / 'short_proxy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
