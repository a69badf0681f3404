"""What the NAS rows add to the report: the proxy's rank correlation and the search curves (``nas_report.json``,
``nas_search.png``, a section of ``results.md``)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from repro.files import write_json_atomically

#: the searches of tools/repro/nas_stages.py whose curves are drawn
SEARCHES: tuple[str, ...] = ("search-shift", "search-nasa", "select-shift")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties corrected; scipy); ``nan`` when a sequence is constant."""
    from scipy.stats import kendalltau

    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"kendall_tau needs two equally long sequences of >= 2 values, got {len(x)} and {len(y)}")
    return float(kendalltau(x, y, variant="b").statistic)


def _arch_search_meta(results_dir: Path, arch: str) -> dict[str, Any]:
    path = results_dir / arch
    if not arch or not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("search") or {})


def proxy_correlation(records: Sequence[dict[str, Any]], results_dir: Path) -> dict[str, Any]:
    """Proxy accuracy (arch JSON) against trained top-1 (mean over the row's seeds) of the ``nas-proxy`` rows."""
    by_row: dict[str, list[float]] = {}
    arch_of: dict[str, str] = {}
    for rec in records:
        if rec["group"] == "nas-proxy":
            by_row.setdefault(rec["row"], []).append(float(rec["metric"]))
            arch_of[rec["row"]] = rec.get("arch", "")
    points = []
    for row, values in by_row.items():
        meta = _arch_search_meta(results_dir, arch_of[row])
        if "accuracy_proxy" in meta:
            points.append({"row": row, "trial": meta.get("trial"), "proxy": float(meta["accuracy_proxy"]),
                           "trained": statistics.fmean(values), "seeds": len(values),
                           "energy_uj": (meta.get("cost") or {}).get("energy_uj")})
    tau = kendall_tau([p["proxy"] for p in points], [p["trained"] for p in points]) if len(points) > 1 else None
    return {"kendall_tau": None if tau is None or tau != tau else tau, "n": len(points),
            "points": sorted(points, key=lambda p: -p["proxy"])}


def search_curves(nas_dir: Path) -> dict[str, dict[str, Any]]:
    """Per search: best feasible proxy accuracy after each trial (from ``candidates.json``) and the chosen one."""
    curves: dict[str, dict[str, Any]] = {}
    for name in SEARCHES:
        path = nas_dir / name / "candidates.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        best_at: dict[int, float] = {}
        for cand in summary.get("candidates", []):
            trial = int(cand["trial"])
            best_at[trial] = max(best_at.get(trial, float("-inf")), float(cand["accuracy"]))
        trials, best, running = [], [], float("-inf")
        for trial in range(int(summary.get("trials", 0))):
            running = max(running, best_at.get(trial, float("-inf")))
            if running > float("-inf"):
                trials.append(trial)
                best.append(running)
        chosen = summary.get("best") or {}
        curves[name] = {"trials": trials, "best_proxy": best, "n_trials": summary.get("trials"),
                        "feasible": summary.get("feasible"), "chosen_trial": chosen.get("trial"),
                        "chosen_proxy": chosen.get("accuracy"), "chosen_cost": chosen.get("cost"),
                        "constraints": summary.get("constraints")}
    return curves


def plot_search_curves(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """Best feasible proxy accuracy over trials, one line per search."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        if curve["trials"]:
            ax.step(curve["trials"], curve["best_proxy"], where="post", label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("best feasible accuracy proxy (%)")
    ax.set_title("NAS search: held-out proxy of the best feasible candidate")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)


def front_points(rows: Sequence[dict[str, Any]], limit_uj: float, margin: float = 1.15) -> list[dict[str, Any]]:
    """Top-1 rows of the hand-designed MCUNet and of the NAS groups within ``margin`` x the energy limit."""
    return [r for r in rows if r.get("metric_name") == "top1" and r.get("energy_uj") is not None
            and r["energy_uj"] <= margin * limit_uj
            and (r["group"].startswith("nas-") or r["group"] == "main-mcunet")]


def plot_nas_front(points: Sequence[dict[str, Any]], limit_uj: float, path: Path) -> None:
    """Mean top-1 +- std over seeds vs energy near the limit (the hand-designed rows far above it are in
    ``accuracy_energy.png``), the limit as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {"main-mcunet": ("o", "hand-designed MCUNet"), "nas-mcunet": ("s", "searched (NAS / NASA)"),
              "nas-proxy": ("D", "searched, proxy-ranked candidates")}
    for group, (marker, label) in styles.items():
        members = [r for r in points if r["group"] == group]
        if not members:
            continue
        ax.errorbar([r["energy_uj"] for r in members], [r["mean"] for r in members],
                    yerr=[r["std"] if r["n"] > 1 else 0.0 for r in members], fmt=marker, capsize=3, label=label)
        for r in members:
            ax.annotate(f"{r['row']} (n={r['n']})", (r["energy_uj"], r["mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=6.5)
    ax.axvline(limit_uj, color="crimson", linestyle="--", linewidth=1, label="limit: MF MCUNet's energy")
    ax.set_xlabel("Energy per image (uJ)")
    ax.set_ylabel("Test top-1 (%), mean +- std over seeds")
    ax.set_title("Searched vs hand-designed multiplication-free networks")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=150)


def write_nas_report(records: Sequence[dict[str, Any]], results_dir: Path, *, plot: bool = True,
                     rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """``nas_report.json`` (+ ``nas_search.png``, and ``nas_front.png`` from the aggregated ``rows``) when
    ``results_dir/nas`` exists; returns the payload."""
    nas_dir = results_dir / "nas"
    if not nas_dir.is_dir():
        return None
    limits_path = nas_dir / "limits.json"
    payload = {"limits": json.loads(limits_path.read_text()) if limits_path.is_file() else None,
               "proxy_correlation": proxy_correlation(records, results_dir), "searches": search_curves(nas_dir)}
    write_json_atomically(results_dir / "nas_report.json", payload, indent=1, default=str)
    if plot and payload["searches"]:
        plot_search_curves(payload["searches"], results_dir / "nas_search.png")
    limits = payload["limits"]
    points = front_points(rows, limits["energy_uj"]) if limits else []
    if plot and points:
        plot_nas_front(points, limits["energy_uj"], results_dir / "nas_front.png")
    return payload


def format_nas_markdown(payload: dict[str, Any]) -> str:
    """The NAS section of ``results.md``."""
    lines = ["## NAS: cost limit, searches, proxy correlation", ""]
    limits = payload.get("limits")
    if limits:
        lines.append(f"Limit: the exported {limits['model']} with `op={limits['op']}`: energy "
                     f"{limits['energy_uj']:.4g} uJ, peak activation memory {limits['peak_kb']:.4g} KiB per image.")
        lines.append("")
    if payload["searches"]:
        lines.append("| search | trials | feasible | chosen trial | its proxy (%) | its energy (uJ) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, c in payload["searches"].items():
            energy = (c.get("chosen_cost") or {}).get("energy_uj")
            proxy = c.get("chosen_proxy")
            lines.append(f"| {name} | {c['n_trials']} | {c['feasible']} | {c['chosen_trial']} | "
                         f"{'-' if proxy is None else f'{proxy:.2f}'} | "
                         f"{'-' if energy is None else f'{energy:.4g}'} |")
        lines.append("")
    corr = payload["proxy_correlation"]
    if corr["n"]:
        tau = corr["kendall_tau"]
        lines.append(f"Proxy vs trained top-1 over {corr['n']} searched architectures: Kendall tau = "
                     f"{'-' if tau is None else f'{tau:+.2f}'}")
        lines.append("")
        lines.append("| row | trial | proxy (%) | trained (%) | seeds | energy (uJ) |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for p in corr["points"]:
            energy = p.get("energy_uj")
            lines.append(f"| {p['row']} | {p['trial']} | {p['proxy']:.2f} | {p['trained']:.2f} | {p['seeds']} | "
                         f"{'-' if energy is None else f'{energy:.4g}'} |")
        lines.append("")
    return "\n".join(lines)
