"""Tables of a ``CostReport``: plain text, Markdown, CSV and JSON (docs/algorithms.md §8)."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from .counter import CostReport, LayerCost

__all__ = ["FORMATS", "format_energy", "format_report"]

FORMATS: tuple[str, ...] = ("text", "md", "csv", "json")
_ALIASES = {"markdown": "md", "txt": "text", "table": "text"}

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "name"), ("op", "op"), ("input", "input_shape"), ("output", "output_shape"), ("mults", "mults"),
    ("adds", "adds"), ("shifts", "shifts"), ("params", "params"), ("w bits", "weight_bits"),
    ("a bits", "act_bits"), ("energy", "energy_pj"), ("note", "note"),
)


def format_energy(pj: float) -> str:
    """Energy with a readable unit (pJ, nJ, uJ, mJ, J), 4 significant digits."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.4g} {unit}"
    return f"{pj:.4g} pJ"


def _shape(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def _cell(layer: LayerCost, attr: str) -> str:
    value = getattr(layer, attr)
    if attr in ("input_shape", "output_shape"):
        return _shape(value)
    if attr == "weight_bits":
        return "/".join(str(b) for b in value) or "-"
    if attr == "energy_pj":
        return format_energy(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _summary_lines(report: CostReport) -> list[tuple[str, str]]:
    mult_layers = report.multiplicative_layers
    lines = [
        ("input", _shape(report.input_shape)),
        ("precision / BN", f"{report.precision} / {report.bn}"),
        ("multiplications", f"{report.mults:,}"),
        ("additions", f"{report.adds:,}"),
        ("shifts", f"{report.shifts:,}"),
        ("MAC positions (conv/linear-like)", f"{report.macs:,}"),
        ("parameters used / stored", f"{report.params:,} / {report.model_params:,}"),
        ("parameter memory", f"{report.param_bytes / 1024:,.1f} KiB"),
        ("peak activation memory", f"{report.peak_activation_bytes / 1024:,.1f} KiB ({report.peak_activation_layer})"),
        (f"energy ({report.precision})", format_energy(report.energy_pj)),
        ("layers with multiplications", f"{len(mult_layers)}: {', '.join(mult_layers) if mult_layers else 'none'}"),
    ]
    if report.uncounted:
        lines.append(("UNCOUNTED modules (ops missing!)", ", ".join(report.uncounted)))
    if report.not_executed:
        lines.append(("not executed (params, 0 ops)", ", ".join(report.not_executed)))
    return lines


def _text(report: CostReport, per_layer: bool) -> str:
    out: list[str] = []
    if per_layer:
        header = [h for h, _ in _COLUMNS]
        body = [[_cell(layer, a) for _, a in _COLUMNS] for layer in report.layers]
        totals = ["TOTAL", "", "", "", f"{report.mults:,}", f"{report.adds:,}", f"{report.shifts:,}",
                  f"{report.params:,}", "", "", format_energy(report.energy_pj), ""]
        widths = [max(len(r[i]) for r in [header, *body, totals]) for i in range(len(header))]
        numeric = {4, 5, 6, 7, 10}

        def fmt(row: list[str]) -> str:
            cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out += [fmt(header), rule, *(fmt(r) for r in body), rule, fmt(totals), ""]
    key_w = max(len(k) for k, _ in _summary_lines(report))
    out += [f"{k.ljust(key_w)}  {v}" for k, v in _summary_lines(report)]
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(report: CostReport, per_layer: bool) -> str:
    out: list[str] = []
    if per_layer:
        out.append("| " + " | ".join(h for h, _ in _COLUMNS) + " |")
        out.append("|" + "|".join("---:" if h in ("mults", "adds", "shifts", "params", "energy") else "---"
                                  for h, _ in _COLUMNS) + "|")
        for layer in report.layers:
            out.append("| " + " | ".join(_md_escape(_cell(layer, a)) for _, a in _COLUMNS) + " |")
        out.append(f"| **TOTAL** | | | | **{report.mults:,}** | **{report.adds:,}** | **{report.shifts:,}** | "
                   f"**{report.params:,}** | | | **{format_energy(report.energy_pj)}** | |")
        out.append("")
    out.append("| quantity | value |")
    out.append("|---|---|")
    out += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in _summary_lines(report)]
    return "\n".join(out) + "\n"


_CSV_FIELDS = ("name", "type", "op", "input_shape", "output_shape", "mults", "adds", "shifts", "macs", "params",
               "param_bits", "weight_bits", "act_bits", "energy_pj", "calls", "multiplicative", "mf_layer", "note")


def _csv(report: CostReport, per_layer: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_CSV_FIELDS)
    if per_layer:
        for layer in report.layers:
            row: list[Any] = []
            for f in _CSV_FIELDS:
                value = getattr(layer, f)
                if f in ("input_shape", "output_shape"):
                    value = _shape(value)
                elif f == "weight_bits":
                    value = "/".join(str(b) for b in value)
                row.append(value)
            writer.writerow(row)
    totals = {"name": "TOTAL", "mults": report.mults, "adds": report.adds, "shifts": report.shifts,
              "macs": report.macs, "params": report.params, "param_bits": int(report.param_bytes * 8),
              "energy_pj": report.energy_pj, "input_shape": _shape(report.input_shape),
              "multiplicative": bool(report.mults)}
    writer.writerow([totals.get(f, "") for f in _CSV_FIELDS])
    return buf.getvalue()


def _json(report: CostReport, per_layer: bool) -> str:
    data = report.to_dict()
    if not per_layer:
        data.pop("layers")
    return json.dumps(data, indent=2) + "\n"


def format_report(report: CostReport, fmt: str = "text", *, per_layer: bool = True) -> str:
    """Render ``report`` as ``'text'`` (aligned table), ``'md'`` (Markdown), ``'csv'`` (one row per layer + a TOTAL
    row) or ``'json'`` (``report.to_dict()``); ``per_layer=False`` gives the totals only."""
    if not isinstance(report, CostReport):
        raise TypeError(f"format_report needs a CostReport (from count_ops), got {type(report).__name__}")
    key = _ALIASES.get(str(fmt).lower(), str(fmt).lower())
    renderers = {"text": _text, "md": _markdown, "csv": _csv, "json": _json}
    if key not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderers[key](report, per_layer)
