"""Collecting finished runs into results.json / results.md / accuracy_energy.png (paired differences per seed)."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from repro.curves import plot_curves, read_curve
from repro.files import write_json_atomically
from repro.nas_report import format_nas_markdown, write_nas_report
from repro.plan import _SHORT_MODEL, BUDGETS, TINY_WIDTH, RunSpec
from repro.provenance import read_provenance
from repro.runs import run_status


# ----------------------------------------------------------------------------------------------------- results
def collect_results(plan: Sequence[RunSpec], runs_dir: Path, *, test_eval: bool = False) -> list[dict[str, Any]]:
    """One record per *finished* run of ``plan``: spec fields + metric (top-1 % or mIoU %) + cost totals, and for
    classification runs the per-epoch ``curve`` of ``summary.csv`` (:func:`repro.curves.read_curve`); ``provenance``:
    code revision, versions and processor of each launch (:mod:`repro.provenance`).
    ``test_eval``: the metric is the official test top-1 of ``test_eval.json`` (runs without one are left out)."""
    records: list[dict[str, Any]] = []
    for spec in plan:
        if run_status(spec, runs_dir) != "finished":
            continue
        out = runs_dir / spec.name
        if test_eval and not (out / "test_eval.json").is_file():
            continue
        rec: dict[str, Any] = {k: v for k, v in asdict(spec).items() if k not in ("extra", "convert_kwargs",
                                                                                    "model_kwargs")}
        rec["flags"] = list(spec.extra) + [f"{k}={v}" for k, v in spec.convert_kwargs + spec.model_kwargs]
        rec["provenance"] = read_provenance(out)
        if spec.kind == "cls":
            summary = json.loads((out / "summary.json").read_text())
            rec["metric"] = float(summary["exported_top1"])
            rec["metric_name"] = "top1"
            rec["eval_top1"] = float(summary.get("eval_top1", rec["metric"]))
            rec["export_matches_eval"] = summary.get("export_matches_eval")
            rec["train_time_s"] = summary.get("train_time_s")
            if test_eval:
                rec["holdout_top1"] = rec["metric"]
                rec["metric"] = rec["eval_top1"] = float(json.loads((out / "test_eval.json").read_text())["top1"])
            cost = summary.get("cost") or {}
            for key in ("macs", "mults", "shifts", "adds", "params", "energy_uj"):
                rec[key] = cost.get(key)
            rec["curve"] = read_curve(out)
        else:
            result = json.loads((out / "result.json").read_text())
            rec["metric"] = float(result["miou"])  # mmseg logs mIoU in %
            rec["metric_name"] = "mIoU"
            rec["train_time_s"] = result.get("wall_s")
            if test_eval:  # chosen on the 'val' split, reported on 'test'
                rec["holdout_miou"] = rec["metric"]
                rec["metric"] = float(json.loads((out / "test_eval.json").read_text())["miou"])
        records.append(rec)
    return records


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (group, model, row): mean, sample std (n-1; 0 for one seed), n, seeds, per-seed values, costs."""
    order: list[tuple[str, str, str]] = []
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        key = (rec["group"], rec["model"], rec["row"])
        if key not in by_key:
            order.append(key)
            by_key[key] = []
        by_key[key].append(rec)
    rows: list[dict[str, Any]] = []
    for key in order:
        recs = sorted(by_key[key], key=lambda r: r["seed"])
        values = [r["metric"] for r in recs]
        row: dict[str, Any] = {
            "group": key[0], "model": key[1], "row": key[2], "metric_name": recs[0]["metric_name"],
            "n": len(values), "seeds": [r["seed"] for r in recs], "values": values,
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        for cost_key in ("macs", "mults", "shifts", "adds", "params", "energy_uj"):
            row[cost_key] = recs[0].get(cost_key)
        walls = [r["train_time_s"] for r in recs if r.get("train_time_s") is not None]
        row["wall_s"] = statistics.fmean(walls) if walls else None
        rows.append(row)
    return rows


#: (a, b) row pairs reported as paired differences ``a - b``: the paper's claims, then each ablation against the
#: main-table row it switches one thing off in (same model, same seeds, same recipe).
PAIRS: tuple[tuple[str, str], ...] = (
    ("NetAug", "Mult"), ("ShiftAug", "Shift"), ("AddAug", "Add"),
    ("AddAug+remap", "AddAug"),
    ("ShiftAug sort-augmented", "ShiftAug"), ("AddAug sort-augmented", "AddAug"), ("ShiftAug no-sort", "ShiftAug"),
    ("AddAug no-sort-remap", "AddAug"),
    ("ShiftAug+block-variant", "ShiftAug"), ("AddAug+block-variant", "AddAug"),
    ("AddAug+block-variant", "AddAug+block-variant no-remap"),
    ("ShiftAug width-only", "ShiftAug"), ("ShiftAug expand-only", "ShiftAug"),
    ("NAS ShiftAug", "NAS Shift"), ("NAS ShiftAug+depth-aug", "NAS ShiftAug"),
    (f"NetAug {TINY_WIDTH}x", f"Mult {TINY_WIDTH}x"), (f"ShiftAug {TINY_WIDTH}x", f"Shift {TINY_WIDTH}x"),
)
#: ((model a, row a), (model b, row b)): searched networks against the hand-designed one of the same cost limit
#: (same seeds = same data subset and initialisation RNG, same recipe)
CROSS_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("shiftadd_custom", "NAS Shift"), ("shiftadd_mcunet", "Shift")),
    (("shiftadd_custom", "NAS ShiftAug"), ("shiftadd_mcunet", "ShiftAug")),
    (("shiftadd_custom", "NAS ShiftAug+depth-aug"), ("shiftadd_mcunet", "ShiftAug")),
    (("shiftadd_custom", "NASA Shift"), ("shiftadd_mcunet", "Shift")),
)


def _difference(metric: dict[tuple[str, str, int], float], group: str, a: tuple[str, str],
                b: tuple[str, str]) -> dict[str, Any] | None:
    seeds = sorted(s for (m, row, s) in metric if (m, row) == a and (b[0], b[1], s) in metric)
    if not seeds:
        return None
    diffs = [metric[(a[0], a[1], s)] - metric[(b[0], b[1], s)] for s in seeds]
    label_b = b[1] if a[0] == b[0] else f"{b[1]} ({_SHORT_MODEL.get(b[0], b[0])})"
    return {"group": group, "model": a[0], "a": a[1], "b": label_b, "b_model": b[0], "seeds": seeds,
            "diffs": diffs, "mean": statistics.fmean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "wins": sum(d > 0 for d in diffs)}


def paired_differences(records: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]] = PAIRS,
                       cross_pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]] = CROSS_PAIRS,
                       ) -> list[dict[str, Any]]:
    """``a - b`` per seed (same seed = same data subset and initial RNG) for each (a, b) row pair and model, then
    for each ``cross_pairs`` entry across models: mean, std, and how many seeds ``a`` won. ``group`` is the group
    of row ``a`` (an ablation row is compared with the main table's row of the same model)."""
    out: list[dict[str, Any]] = []
    metric = {(r["model"], r["row"], r["seed"]): r["metric"] for r in records}
    group_of = {(r["model"], r["row"]): r["group"] for r in records}
    for model in dict.fromkeys(r["model"] for r in records):
        for a, b in pairs:
            if (model, a) in group_of:
                diff = _difference(metric, group_of[(model, a)], (model, a), (model, b))
                out += [diff] if diff else []
    for a_key, b_key in cross_pairs:
        if a_key in group_of:
            diff = _difference(metric, group_of[a_key], a_key, b_key)
            out += [diff] if diff else []
    return out


def _fmt_int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _fmt_wall(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def _fmt_energy(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def format_markdown(rows: Sequence[dict[str, Any]], diffs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown report: one table per group, then paired differences."""
    lines = ["# ShiftAddAug reproduction (offline data)", ""]
    settings = ", ".join(f"{k}={v}" for k, v in meta["budget_settings"].items()
                         if not k.startswith("seg_") and k not in ("seeds", "holdout"))
    kinds = {r["metric_name"] for r in rows}
    if "top1" in kinds or not rows:
        lines.append(f"Budget `{meta['budget']}`: {settings}")
    if "mIoU" in kinds:
        b = meta["budget_settings"]
        lines.append(f"Segmentation budget `{meta['budget']}`: {b['seg_iters']} iterations of batch {b['seg_batch']} "
                     "(the config's optimizer, warm-up and cosine schedule shortened to them); held-out = the "
                     "dataset's 'val' split, test = its 'test' split (scenes: generated validation scenes)")
    split = meta.get("split", "test")
    lines.append("")
    lines.append("Evaluation split: " + ("**held-out validation** images of the training split (choosing settings)"
                                         if split == "holdout" else "official **test** split (reporting)") + "."
                 + (" The runs are those of the held-out table (trained without the held-out images, settings "
                    "chosen there); only the main-table rows (and the regime groups' main rows) are evaluated on the "
                    "test split."
                    if meta.get("test_of_holdout_runs") else ""))
    lines.append("")
    lines.append("Top-1 / mIoU of the **exported** target network (%), mean +- sample std over seeds (n = seeds). "
                 "Costs per image of the exported network (cost model `shiftaddaug_plugin.cost`, fp32 energy table).")
    lines.append("")
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        lines.append(f"## {group} ({members[0]['model']})")
        lines.append("")
        metric = members[0]["metric_name"]
        if members[0]["metric_name"] == "top1":
            lines.append(f"| row | {metric} (%) | n | per seed | MACs | mults | shifts | adds | energy (uJ) |")
            lines.append("|---|---:|---:|---|---:|---:|---:|---:|---:|")
            for r in members:
                lines.append(f"| {r['row']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                             f"{', '.join(f'{v:.2f}' for v in r['values'])} | {_fmt_int(r['macs'])} | "
                             f"{_fmt_int(r['mults'])} | {_fmt_int(r['shifts'])} | {_fmt_int(r['adds'])} | "
                             f"{_fmt_energy(r['energy_uj'])} |")
        else:
            lines.append(f"| row | {metric} (%) | n | per seed | wall per run (s) |")
            lines.append("|---|---:|---:|---|---:|")
            for r in members:
                lines.append(f"| {r['row']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | "
                             f"{', '.join(f'{v:.2f}' for v in r['values'])} | {_fmt_wall(r.get('wall_s'))} |")
        lines.append("")
    if diffs:
        lines.append("## Paired differences (same seed = same data subset and initialisation RNG)")
        lines.append("")
        lines.append("| group | comparison | mean diff (points) | std | wins / seeds | per seed |")
        lines.append("|---|---|---:|---:|---:|---|")
        for d in diffs:
            lines.append(f"| {d['group']} | {d['a']} - {d['b']} | {d['mean']:+.2f} | {d['std']:.2f} | "
                         f"{d['wins']}/{len(d['seeds'])} | {', '.join(f'{v:+.2f}' for v in d['diffs'])} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(plan: Sequence[RunSpec], runs_dir: Path, results_dir: Path, budget_name: str,
                  extra_meta: dict[str, Any] | None = None, plot: bool = True, *,
                  test_eval: bool = False) -> dict[str, Any]:
    """``results.json``, ``results.md``, ``accuracy_energy.png`` and ``curves.png`` (learning curves of the
    classification runs) from the finished runs of ``plan``;
    ``test_eval`` (after ``--split holdout``): ``results_test.json`` / ``results_test.md`` with the official test
    top-1 of the main-table runs (:func:`run_test_evals`), the held-out reports left as they are."""
    records = collect_results(plan, runs_dir, test_eval=test_eval)
    rows = aggregate(records)
    diffs = paired_differences(records)
    meta = {"budget": budget_name, "budget_settings": asdict(BUDGETS[budget_name]),
            "finished_runs": len(records), "planned_runs": len(plan), **(extra_meta or {})}
    if test_eval:
        meta["split"] = "test"
        meta["test_of_holdout_runs"] = True
    stem = "results_test" if test_eval else "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": rows, "paired_differences": diffs, "runs": records}
    write_json_atomically(results_dir / f"{stem}.json", payload, indent=2, default=str)
    nas = None if test_eval else write_nas_report(records, results_dir, plot=plot, rows=rows)
    (results_dir / f"{stem}.md").write_text(format_markdown(rows, diffs, meta) + "\n"
                                            + (format_nas_markdown(nas) + "\n" if nas else ""))
    if test_eval:
        return payload
    points = [{"name": f"{r['row']} ({_SHORT_MODEL.get(r['model'], r['model'])})", "accuracy": r["mean"],
               "energy": r["energy_uj"],
               "group": r["group"] if r["group"].startswith("nas-") else r["model"]}
              for r in rows if r["metric_name"] == "top1" and r.get("energy_uj") is not None
              and r["group"].startswith(("main-", "nas-"))]  # ablation rows share their main row's cost: tables only
    if plot:
        plot_curves(records, results_dir / "curves.png",
                    title=f"Fashion-MNIST, {'held-out' if meta.get('split') == 'holdout' else 'test'} evaluation "
                          f"({budget_name} budget), mean over seeds")
    if plot and points:
        from shiftaddaug_plugin.cost import plot_pareto

        plot_pareto(points, results_dir / "accuracy_energy.png",
                    title=f"Fashion-MNIST, exported targets ({budget_name} budget)", log_energy=True)
    return payload
