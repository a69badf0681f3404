"""``shiftaddaug-count``: cost report of a timm model, or a Pareto plot of runs (docs/algorithms.md §8).

    shiftaddaug-count --model mobilenetv2_050 --input-size 3 64 64 --format md --per-layer
    shiftaddaug-count --model shiftadd_mcunet --model-kwargs num_classes=100 --checkpoint slim.pth --input-size 3 32 32
    shiftaddaug-count --pareto runs.json --plot pareto.png

``--checkpoint`` is a state dict (loaded with ``weights_only=True``; a ``state_dict`` / ``model`` /
``state_dict_ema`` entry of a training checkpoint is accepted) for the model that ``--model`` builds.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .counter import count_ops
from .energy import PRECISIONS, EnergyTable
from .plot import plot_pareto
from .report import FORMATS, format_energy, format_report


def _parse_kwarg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-kwargs entries look like key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed: Any = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # plain string
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shiftaddaug-count",
        description="Count multiplications / additions / shifts, parameters, peak activation memory and energy of a "
        "timm model (or plot accuracy vs energy of runs).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="timm model name (our shiftadd_* models are registered automatically)")
    src.add_argument("--pareto", metavar="RUNS_JSON", help="JSON list of {name, accuracy, energy[, group]} to plot")
    p.add_argument("--model-kwargs", nargs="*", default=[], type=_parse_kwarg, metavar="K=V",
                   help="keyword arguments for timm.create_model (values parsed as Python literals)")
    p.add_argument("--checkpoint", help="state dict file for the model (weights_only loading)")
    p.add_argument("--input-size", nargs="+", type=int, default=[3, 224, 224], metavar="N",
                   help="C H W (one image) or the full input shape; default 3 224 224")
    p.add_argument("--precision", default="fp32", help=f"energy column: {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--bn", choices=("folded", "unfolded"), default="folded", help="BatchNorm cost (default folded)")
    p.add_argument("--mode", choices=("target", "augmented"), default=None, help="hybrid layers' mode while counting")
    p.add_argument("--energy-table", help="JSON overrides {precision: {mult|add|shift: pJ}}")
    p.add_argument("--format", choices=(*FORMATS, "markdown"), default="text", help="report format (default text)")
    p.add_argument("--per-layer", action="store_true", help="include one row per layer")
    p.add_argument("--output", "-o", help="write the report here instead of stdout")
    p.add_argument("--plot", help="with --pareto: PNG output path (default pareto.png)")
    p.add_argument("--title", default="Accuracy vs. energy", help="with --pareto: chart title")
    p.add_argument("--log-energy", action="store_true", help="with --pareto: logarithmic energy axis")
    return p


def _load_state_dict(path: str) -> dict[str, Any]:
    import torch

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--checkpoint {path!r} does not exist")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused: a pickled module, not a state dict
        raise ValueError(
            f"--checkpoint {path!r} is not a plain state dict loadable with weights_only=True ({err}); save "
            "model.state_dict() instead of the module"
        ) from err
    if isinstance(data, dict):
        for key in ("state_dict_ema", "state_dict", "model"):
            inner = data.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if all(isinstance(v, torch.Tensor) for v in data.values()):
            return data
    raise ValueError(f"--checkpoint {path!r} holds no state dict (a dict of tensors, or one under "
                     f"'state_dict'/'model')")


def _build_model(args: argparse.Namespace) -> Any:
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise SystemExit(f"shiftaddaug-count --model needs timm: {err}") from err
    try:  # registers our shiftadd_* models (written separately; optional)
        importlib.import_module("shiftaddaug_plugin.models")
    except ModuleNotFoundError as err:
        if err.name not in ("shiftaddaug_plugin.models",):
            raise
    if not timm.is_model(args.model):
        close = timm.list_models(f"*{args.model}*")[:10]
        raise ValueError(f"unknown timm model {args.model!r}" + (f"; similar: {close}" if close else ""))
    model = timm.create_model(args.model, pretrained=False, **dict(args.model_kwargs))
    if args.checkpoint:
        state = _load_state_dict(args.checkpoint)
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                      if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"--checkpoint does not match --model {args.model}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}, shape mismatch {mismatched[:5]}; build the same model (same --model-kwargs) "
                "as the checkpoint"
            )
        model.load_state_dict(state, strict=True)
    return model


def _run_pareto(args: argparse.Namespace) -> int:

    out = args.plot or "pareto.png"
    front = plot_pareto(args.pareto, out, title=args.title, log_energy=args.log_energy)
    shown = ", ".join(f"{r['name']} ({r['accuracy']:g}, {r['energy']:g})" for r in front)
    print(f"wrote {out}; Pareto front: {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``shiftaddaug-count``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.pareto:
            return _run_pareto(args)

        table = None
        if args.energy_table:
            table = EnergyTable.from_dict(json.loads(Path(args.energy_table).read_text()))
        model = _build_model(args)
        report = count_ops(model, args.input_size, precision=args.precision, energy_table=table, bn=args.bn,
                           mode=args.mode)
    except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as err:
        parser.error(str(err))
    text = format_report(report, args.format, per_layer=args.per_layer)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}: {report.mults:,} mults, {report.adds:,} adds, {report.shifts:,} shifts, "
              f"{format_energy(report.energy_pj)} ({report.precision})")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
