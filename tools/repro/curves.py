"""Learning curves of classification runs: each run's per-epoch ``summary.csv`` into its results record, and one
figure (``curves.png``) of the evaluated top-1 and the target's training loss per row, mean over seeds.

The curves are what shows *when* a row gains or loses against another (for example while width augmentation is
on and after it stops), which a final top-1 cannot.
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

#: ``summary.csv`` columns kept in a record's curve (``shiftaddaug_plugin.train.cli.SUMMARY_FIELDS``)
CURVE_FIELDS = ("epoch", "train_loss_target", "train_loss_aug", "train_top1", "eval_top1", "width_aug")


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def read_curve(run_dir: Path) -> list[dict[str, float | None]]:
    """Per-epoch rows of ``run_dir/summary.csv`` (numbers; ``None`` where an epoch was not evaluated); ``[]`` when
    the run wrote no ``summary.csv``. Epoch numbers count from 1 (the row after training epoch ``e`` is ``e + 1``)."""
    path = run_dir / "summary.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    curve: list[dict[str, float | None]] = []
    for row in rows:
        point = {key: _number(row.get(key)) for key in CURVE_FIELDS}
        if point["epoch"] is not None:
            point["epoch"] = point["epoch"] + 1
        curve.append(point)
    return curve


def mean_curves(records: Sequence[dict[str, Any]], field: str) -> dict[tuple[str, str], list[tuple[float, float, int]]]:
    """``(model, row) -> [(epoch, mean of field over the seeds that have it, count)]``, epochs ascending; rows whose
    runs carry no curve are left out."""
    values: dict[tuple[str, str], dict[float, list[float]]] = {}
    for rec in records:
        for point in rec.get("curve") or ():
            if point.get(field) is None or point.get("epoch") is None:
                continue
            values.setdefault((rec["model"], rec["row"]), {}).setdefault(point["epoch"], []).append(point[field])
    return {key: [(epoch, statistics.fmean(v), len(v)) for epoch, v in sorted(per_epoch.items())]
            for key, per_epoch in values.items()}


def width_aug_end(records: Sequence[dict[str, Any]]) -> float | None:
    """Last epoch in which any run of ``records`` trained with width augmentation on (``None``: no such epoch)."""
    epochs = [p["epoch"] for rec in records for p in rec.get("curve") or ()
              if p.get("width_aug") and p.get("epoch") is not None]
    return max(epochs) if epochs else None


def plot_curves(records: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Draw evaluated top-1 (left) and the target's training loss (right) per epoch, one line per (model, row),
    mean over seeds, epochs with width augmentation shaded, to ``path`` (PNG). Returns False (and writes nothing)
    when no record has a curve."""
    top1 = mean_curves(records, "eval_top1")
    loss = mean_curves(records, "train_loss_target")
    if not top1 and not loss:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    aug_end = width_aug_end(records)
    for ax, curves, ylabel in ((ax_acc, top1, "evaluated top-1 of the target (%)"),
                               (ax_loss, loss, "target training loss")):
        for (model, row), points in curves.items():
            seeds = max(n for _, _, n in points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3,
                    label=f"{row} ({model.replace('shiftadd_', '')}, {seeds} seed{'s' if seeds > 1 else ''})")
        if aug_end is not None:
            ax.axvspan(0.5, aug_end + 0.5, color="0.9", zorder=0, label="width augmentation on")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True
