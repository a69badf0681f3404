"""Accuracy-vs-energy Pareto chart of a set of runs (ShiftAddAug's CIFAR-100 figure style; docs/algorithms.md §8).

Runs are dicts (or a JSON file of a list of dicts) with ``name``, ``accuracy`` and ``energy`` (any consistent unit,
e.g. uJ from ``CostReport.energy_pj * 1e-6``); an optional ``group`` (e.g. 'multiplicative', 'ShiftAddAug')
colours the points. A run is on the Pareto front when no other run has lower-or-equal energy and higher-or-equal
accuracy with one of the two strictly better. Matplotlib is used through its Agg canvas only (no global backend
switch, no display).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["load_runs", "pareto_front", "plot_pareto"]

Run = Mapping[str, Any]


def load_runs(runs: Sequence[Run] | str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Validate runs (or read them from a JSON file holding a list of dicts, or ``{"runs": [...]}``)."""
    if isinstance(runs, (str, os.PathLike)):
        path = Path(runs)
        if not path.is_file():
            raise ValueError(f"runs file {str(path)!r} does not exist; give a JSON list of {{name, accuracy, energy}}")
        data = json.loads(path.read_text())
        runs = data["runs"] if isinstance(data, dict) and "runs" in data else data
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)):
        raise TypeError(f"runs must be a list of dicts with name, accuracy, energy; got {type(runs).__name__}")
    out: list[dict[str, Any]] = []
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise TypeError(f"run #{i} must be a dict with name, accuracy, energy; got {run!r}")
        missing = [k for k in ("name", "accuracy", "energy") if k not in run]
        if missing:
            raise ValueError(f"run #{i} ({run.get('name', '?')!r}) lacks {missing}; each run needs name, accuracy, "
                             f"energy")
        acc, energy = run["accuracy"], run["energy"]
        for key, value in (("accuracy", acc), ("energy", energy)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"run {run['name']!r}: {key} must be a finite number, got {value!r}")
        if energy < 0:
            raise ValueError(f"run {run['name']!r}: energy must be >= 0, got {energy!r}")
        out.append({**run, "accuracy": float(acc), "energy": float(energy)})
    if not out:
        raise ValueError("no runs to plot; give at least one {name, accuracy, energy}")
    return out


def pareto_front(runs: Sequence[Run] | str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Runs not dominated by any other (lower energy and higher accuracy are better), sorted by energy."""
    return _front(load_runs(runs))


def _front(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    front = [
        r for r in items
        if not any(
            o["energy"] <= r["energy"] and o["accuracy"] >= r["accuracy"]
            and (o["energy"] < r["energy"] or o["accuracy"] > r["accuracy"])
            for o in items
        )
    ]
    return sorted(front, key=lambda r: (r["energy"], -r["accuracy"]))


def plot_pareto(
    runs: Sequence[Run] | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    title: str = "Accuracy vs. energy",
    energy_label: str = "Energy (uJ)",
    accuracy_label: str = "Top-1 accuracy (%)",
    log_energy: bool = False,
    annotate: bool = True,
    dpi: int = 150,
) -> list[dict[str, Any]]:
    """Scatter accuracy over energy, highlight and connect the Pareto front, write a PNG to ``path``.

    Returns the Pareto-front runs (as ``pareto_front``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = load_runs(runs)
    front = _front(items)
    front_ids = {id(r) for r in front}
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in items:
        groups.setdefault(str(r.get("group", "runs")), []).append(r)
    markers = "osD^v<>ph*"
    for i, (group, members) in enumerate(groups.items()):
        ax.scatter([r["energy"] for r in members], [r["accuracy"] for r in members], s=45, marker=markers[i % 10],
                   alpha=0.75, label=group, zorder=3)
    ax.plot([r["energy"] for r in front], [r["accuracy"] for r in front], color="crimson", linewidth=1.6,
            linestyle="--", zorder=2, label="Pareto front")
    ax.scatter([r["energy"] for r in front], [r["accuracy"] for r in front], s=110, facecolors="none",
               edgecolors="crimson", linewidths=1.6, zorder=4)
    if annotate:
        for r in items:
            ax.annotate(str(r["name"]), (r["energy"], r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, fontweight="bold" if id(r) in front_ids else "normal")
    if log_energy:
        if any(r["energy"] <= 0 for r in items):
            raise ValueError("log_energy=True needs every energy > 0")
        ax.set_xscale("log")
    ax.set_xlabel(energy_label)
    ax.set_ylabel(accuracy_label)
    ax.set_title(title)
    ax.grid(True, linestyle=":", alpha=0.6)
    ax.legend(fontsize=8, loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return front
