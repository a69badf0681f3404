"""Command line of ``shiftaddaug-train``: timm ``train.py`` flag names plus the ShiftAddAug flags (docs/algorithms.md
§4).

As in timm, ``-c/--config file.yaml`` sets defaults from a yaml mapping whose keys are the flag names
(``batch_size`` or ``batch-size``; both spellings are accepted); flags given on the command line win over the file.
Unknown yaml keys are an error (a typo would otherwise silently train with a default).

Flags shared with timm keep timm's names and meaning (``--model``, ``--data-dir``, ``--dataset``, ``-b``, ``--epochs``,
``--lr``, ``--opt``, ``--sched``, ``--warmup-epochs``, ``--weight-decay``, ``--smoothing``, ``--amp``, ``--model-ema``,
``--resume``, ``--output``, ``--seed``, ``--workers``, ``--model-kwargs``, ``--img-size``/``--input-size``, ...).
ShiftAddAug flags: ``--aug-alpha``, ``--aug-width-mult-list``, ``--aug-expand-list``, ``--width-aug-stop``,
``--sort-interval``, ``--block-variant``, ``--block-variant-end``, ``--bn-recal-images``, ``--no-aug``; and
``--train-subset`` / ``--val-subset`` for quick runs on a slice of the data.
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from typing import Any, Sequence

__all__ = ["build_parser", "parse_args", "validate_args", "load_yaml_config", "BLOCK_VARIANT_SCHEDULES"]

#: block-variant schedules (docs/algorithms.md §6): 'none' = target MF from the start; 'linear' = MF shallow -> deep
BLOCK_VARIANT_SCHEDULES: tuple[str, ...] = ("none", "linear")
_RESERVED_MODEL_KWARGS = ("aug", "aug_width_mult_list", "aug_expand_list")


class _ParseKwargs(argparse.Action):
    """``k=v`` pairs -> dict; values go through ``ast.literal_eval`` when they parse, else stay strings (timm's
    ``--model-kwargs`` behaviour)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        out: dict[str, Any] = {}
        for item in values or []:
            if not item:
                continue
            if "=" not in item:
                parser.error(f"{option_string} expects key=value pairs, got {item!r} (e.g. {option_string} op=shift)")
            key, value = item.split("=", 1)
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
        setattr(namespace, self.dest, out)


def build_parser() -> argparse.ArgumentParser:
    """The full parser (without ``--config``, which :func:`parse_args` handles first, as timm does)."""
    p = argparse.ArgumentParser(
        prog="shiftaddaug-train",
        description="ShiftAddAug augmentation training of a timm model (target MF network trained inside a wider "
                    "hybrid network, arXiv 2407.02881). Flags follow timm train.py; -c/--config reads a yaml of flags.",
    )
    p.add_argument("-c", "--config", default="", metavar="FILE", help="yaml file of flag defaults (keys = flag names)")

    g = p.add_argument_group("dataset")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="dataset root (timm datasets); fashion_mnist: folder of the idx files "
                        "(default $SHIFTADDAUG_FMNIST_DIR or /usr/share/datasets/fashion-mnist)")
    g.add_argument("--dataset", default="fashion_mnist",
                   help="'fashion_mnist' (embedded, offline) or any timm dataset name: '' = ImageFolder/ImageTar, "
                        "'torch/cifar100', 'hfds/...', ... (default fashion_mnist)")
    g.add_argument("--train-split", default="train", help="training split (timm datasets)")
    g.add_argument("--val-split", default="validation", help="evaluation split (timm datasets; fashion_mnist: test)")
    g.add_argument("--dataset-download", action="store_true", help="allow timm torch/* datasets to download")
    g.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on a fixed random subset of N training images (quick runs)")
    g.add_argument("--val-subset", type=int, default=None, metavar="N",
                   help="evaluate on a fixed random subset of N evaluation images")
    g.add_argument("--holdout-val", type=int, default=None, metavar="N",
                   help="evaluate on N images held out of the TRAINING split (a validation split for choosing "
                        "settings; fixed for every --seed, disjoint from the training images) instead of --val-split")
    g.add_argument("--class-map", default="", help="timm class map file")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="shiftadd_mcunet", help="timm model name (default shiftadd_mcunet)")
    g.add_argument("--model-kwargs", nargs="*", default={}, action=_ParseKwargs, metavar="K=V",
                   help="keyword arguments of the model entrypoint, e.g. op=shift width_mult=0.5")
    g.add_argument("--num-classes", type=int, default=None, help="classes (default: from the dataset)")
    g.add_argument("--in-chans", type=int, default=None,
                   help="input channels (default: 1 for fashion_mnist, else 3)")
    g.add_argument("--img-size", type=int, default=None, help="square input size (default 32 for fashion_mnist)")
    g.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="full input size C H W (overrides --img-size / --in-chans)")
    g.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean per channel")
    g.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std per channel")
    g.add_argument("--interpolation", default="", help="resize interpolation (timm datasets)")
    g.add_argument("--crop-pct", type=float, default=None, help="eval center-crop fraction (timm datasets)")
    g.add_argument("--drop", type=float, default=0.0, help="classifier dropout rate")
    g.add_argument("--drop-path", type=float, default=None, help="drop-path rate")
    g.add_argument("-b", "--batch-size", type=int, default=128, help="training batch size per process")
    g.add_argument("-vb", "--validation-batch-size", type=int, default=None, help="evaluation batch size")

    g = p.add_argument_group("optimizer / schedule")
    g.add_argument("--opt", default="sgd",
                   help="timm optimizer name (default sgd = timm's SGD with Nesterov momentum; 'momentum' = classical)")
    g.add_argument("--opt-eps", type=float, default=None, help="optimizer epsilon")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, default=4e-5,
                   help="weight decay (default 4e-5; never on biases and norm layers)")
    g.add_argument("--clip-grad", type=float, default=None, help="gradient clipping norm (off by default)")
    g.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    g.add_argument("--sched", default="cosine", help="timm scheduler name (default cosine)")
    g.add_argument("--sched-on-updates", action="store_true", help="step the schedule every update, not epoch")
    g.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    g.add_argument("--warmup-lr", type=float, default=1e-5, help="warm-up start learning rate")
    g.add_argument("--min-lr", type=float, default=0.0, help="floor of the schedule")
    g.add_argument("--epochs", type=int, default=10, help="training epochs")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing (default 0.1)")

    g = p.add_argument_group("augmentation (data)")
    g.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random-resized-crop scale range (timm datasets; default timm's)")
    g.add_argument("--ratio", type=float, nargs=2, default=None, help="random-resized-crop aspect range")
    g.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    g.add_argument("--color-jitter", type=float, default=0.0,
                   help="colour jitter (default 0: light augmentation for tiny nets, docs/algorithms.md §4)")
    g.add_argument("--crop-padding", type=int, default=None,
                   help="fashion_mnist: random-crop padding in pixels (default img_size // 8)")

    g = p.add_argument_group("ShiftAddAug (docs/algorithms.md §4)")
    g.add_argument("--aug-alpha", type=float, default=1.0, help="weight of the augmented loss (default 1.0)")
    g.add_argument("--aug-width-mult-list", type=float, nargs="+", default=None,
                   help="width multipliers of the augmented model (default: the model's NetAug list)")
    g.add_argument("--aug-expand-list", type=float, nargs="+", default=None,
                   help="expand multipliers of the augmented model (default: the model's NetAug list)")
    g.add_argument("--width-aug-stop", type=float, default=0.5,
                   help="fraction of the epochs after which width augmentation stops (expand continues), default 0.5")
    g.add_argument("--sort-interval", type=int, default=1,
                   help="sort mid channels by importance every N epochs while width augmentation is on (0 = never)")
    g.add_argument("--sort-scope", default="all", choices=("all", "augmented"),
                   help="'all' (default, paper/NetAug): the most important mid channels move into the target; "
                        "'augmented': the target channels stay, only the augmented ones are sorted")
    g.add_argument("--sort-diagnostics", action="store_true",
                   help="at each sort, log what the MF operators read (mean |w|, kurtosis, output-channel correlation, "
                        "target loss) before and after sorting, with and without the remap -> sort_diagnostics.jsonl; "
                        "with --block-variant linear also at each switch, for the layers turning MF -> "
                        "switch_diagnostics.jsonl")
    g.add_argument("--no-sort-remap", dest="sort_remap", action="store_false",
                   help="do not quantile-match (eq. 5) weights that cross an adder layer's target boundary when "
                        "channels are sorted (ablation)")
    g.add_argument("--block-variant", default="none", choices=BLOCK_VARIANT_SCHEDULES,
                   help="block-variant schedule (docs/algorithms.md §6): 'linear' turns target layers MF shallow -> "
                        "deep")
    g.add_argument("--block-variant-end", type=float, default=0.5,
                   help="fraction of the epochs at which block-variant training has made every layer MF")
    g.add_argument("--no-block-variant-remap", dest="block_variant_remap", action="store_false",
                   help="block-variant: keep an adder layer's multiplicatively trained target weights as they are when "
                        "it turns MF (default: quantile-match them onto the adder prior, eq. 5; the ablation)")
    g.add_argument("--remap-pretrain-steps", type=int, default=50,
                   help="heterogeneous weight sharing (eq. 5, model kwarg convert_kwargs={'remap': True}): Adam steps "
                        "pre-training each remap's FC on the target loss before training, after which the remaps are "
                        "frozen (docs/algorithms.md §5; 0 = freeze at the identity FC). Ignored without remapped "
                        "layers")
    g.add_argument("--remap-pretrain-lr", type=float, default=1e-3, help="Adam learning rate of the remap pre-training")
    g.add_argument("--bn-recal-images", type=int, default=2000,
                   help="training images for BN recalibration before every evaluation and export (default 2000)")
    g.add_argument("--no-aug", action="store_true",
                   help="baseline: train the target MF network directly (no augmented pass; the augmentation lists are "
                        "ignored, so a recipe's yaml can be reused as is)")

    g = p.add_argument_group("misc")
    g.add_argument("--max-nonfinite-steps", type=int, default=0, metavar="N",
                   help="skip up to N optimizer steps whose loss is NaN/inf, then stop (default 0: stop at the first)")
    g.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    g.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"), help="autocast dtype")
    g.add_argument("--model-ema", action="store_true", help="keep an EMA copy (timm ModelEmaV3)")
    g.add_argument("--model-ema-decay", type=float, default=0.9998, help="EMA decay")
    g.add_argument("--resume", default="", metavar="PATH", help="resume from this checkpoint (last.pth.tar)")
    g.add_argument("--output", default="", metavar="DIR", help="output folder (default ./output/train)")
    g.add_argument("--experiment", default="", help="sub-folder name under --output (default: model-timestamp)")
    g.add_argument("--seed", type=int, default=42, help="random seed")
    g.add_argument("-j", "--workers", type=int, default=2, help="data loader worker processes")
    g.add_argument("--log-interval", type=int, default=50, help="batches between rate/ETA lines (0 = none)")
    g.add_argument("--eval-interval", type=int, default=1, help="evaluate every N epochs (and always at the end)")
    g.add_argument("--device", default=None, help="device (default cuda if available, else cpu)")
    g.add_argument("--dist-backend", default=None, help="torch.distributed backend (default nccl/gloo)")
    g.add_argument("--dist-url", default=None, help="torch.distributed init url (default env://)")
    g.add_argument("--validate-exported", default="", metavar="PATH",
                   help="evaluate an exported_target.pth (rebuilt from its .json) on --dataset and exit")
    g.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                   help="stop (as if interrupted) after N epochs of this run, leaving a resumable checkpoint")
    return p


def load_yaml_config(path: str | os.PathLike[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a yaml mapping of flag defaults; keys may use dashes or underscores. ``ValueError`` on unknown keys."""
    import yaml

    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file; pass a yaml file such as configs/timm/"
                         "fashion_mnist_mcunet_shiftaug.yaml")
    with open(path, "r", encoding="utf-8") as handle:
        cfg = yaml.safe_load(handle) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"--config {path}: expected a mapping of flag names to values, got {type(cfg).__name__}")
    dests = {a.dest for a in parser._actions}  # noqa: SLF001 - argparse has no public listing
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in dests or dest in ("config", "help"):
            close = sorted(d for d in dests if d.split("_")[0] == dest.split("_")[0])[:6]
            raise ValueError(f"--config {path}: unknown key {key!r}; keys are flag names of shiftaddaug-train"
                             + (f" (did you mean one of {close}?)" if close else " (see shiftaddaug-train --help)"))
        out[dest] = value
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` if ``None``) after applying ``--config`` defaults; then
    :func:`validate_args`. Bad values raise ``ValueError`` with the fix."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default="")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_yaml_config(known.config, parser))
    args = parser.parse_args(argv)
    validate_args(args)
    _check_no_aug_flags(args, sys.argv[1:] if argv is None else list(argv))
    return args


#: flags that only act while the hybrid network is trained; with --no-aug they would be silently ignored
AUGMENTATION_FLAGS = ("--aug-alpha", "--aug-width-mult-list", "--aug-expand-list", "--width-aug-stop",
                      "--sort-interval", "--sort-scope", "--sort-diagnostics", "--no-sort-remap")


def _check_no_aug_flags(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """``--no-aug`` together with augmentation flags given on the command line is a contradiction (a config
    file's augmentation keys are fine: ``--no-aug`` is how its baseline is run)."""
    if not args.no_aug:
        return
    options = {token.split("=")[0] for token in argv if token.startswith("--") and len(token.split("=")[0]) > 2}
    given = sorted(flag for flag in AUGMENTATION_FLAGS if any(flag.startswith(o) for o in options))  # abbreviations
    if given:
        raise ValueError(f"--no-aug trains the target network alone, so {', '.join(given)} would be ignored; drop "
                         f"{'it' if len(given) == 1 else 'them'} or drop --no-aug")


def _positive_int(args: argparse.Namespace, name: str, *, allow_none: bool = False, minimum: int = 1) -> None:
    value = getattr(args, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{flag}={value!r} must be an integer >= {minimum}")


def _fraction(args: argparse.Namespace, name: str) -> None:
    value = getattr(args, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"--{name.replace('_', '-')}={value!r} must be a fraction of the epochs in [0, 1]")


def _multipliers(args: argparse.Namespace, name: str) -> None:
    value = getattr(args, name)
    if value is None:
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
        setattr(args, name, value)
    flag = "--" + name.replace("_", "-")
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{flag} must be a non-empty list of multipliers >= 1.0, e.g. {flag} 1.0 1.6 2.2")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
           or v < 1.0]
    if bad:
        raise ValueError(f"{flag}: multipliers must be finite numbers >= 1.0 (1.0 = target width), got {bad}")
    setattr(args, name, [float(v) for v in value])


def validate_args(args: argparse.Namespace) -> None:
    """Check the values ``argparse`` cannot check (ranges, combinations); ``ValueError`` naming flag and fix."""
    for name in ("epochs", "batch_size", "bn_recal_images", "eval_interval"):
        _positive_int(args, name)
    for name in ("validation_batch_size", "train_subset", "val_subset", "holdout_val", "num_classes", "img_size",
                 "in_chans",
                 "stop_after_epochs"):
        _positive_int(args, name, allow_none=True)
    _positive_int(args, "workers", minimum=0)
    _positive_int(args, "log_interval", minimum=0)
    _positive_int(args, "sort_interval", minimum=0)
    _positive_int(args, "warmup_epochs", minimum=0)
    _positive_int(args, "max_nonfinite_steps", minimum=0)
    _fraction(args, "width_aug_stop")
    _fraction(args, "block_variant_end")
    if args.block_variant not in BLOCK_VARIANT_SCHEDULES:
        raise ValueError(f"--block-variant={args.block_variant!r}; use one of {', '.join(BLOCK_VARIANT_SCHEDULES)}")
    for name in ("lr", "aug_alpha", "weight_decay", "smoothing", "momentum", "hflip", "color_jitter"):
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"--{name.replace('_', '-')}={value!r} must be a finite number >= 0")
    if args.lr <= 0:
        raise ValueError(f"--lr={args.lr!r} must be > 0")
    if not args.smoothing < 1.0:
        raise ValueError(f"--smoothing={args.smoothing!r} must be < 1 (0.1 is the recipe default)")
    if args.warmup_epochs >= args.epochs and args.warmup_epochs > 0:
        raise ValueError(f"--warmup-epochs={args.warmup_epochs} must be smaller than --epochs={args.epochs}")
    _multipliers(args, "aug_width_mult_list")
    _multipliers(args, "aug_expand_list")
    if not isinstance(args.model_kwargs, dict):
        raise ValueError(f"--model-kwargs must be key=value pairs (yaml: a mapping), got {args.model_kwargs!r}")
    reserved = [k for k in args.model_kwargs if k in _RESERVED_MODEL_KWARGS]
    if reserved:
        raise ValueError(f"--model-kwargs {', '.join(reserved)}: set by the trainer; use --no-aug / "
                         "--aug-width-mult-list / --aug-expand-list instead")
    if args.input_size is not None:
        if len(args.input_size) != 3 or any(int(v) < 1 for v in args.input_size):
            raise ValueError(f"--input-size={args.input_size!r} must be three positive ints C H W, e.g. 1 32 32")
        args.input_size = [int(v) for v in args.input_size]
    for name in ("mean", "std"):
        value = getattr(args, name)
        if value is not None:
            if isinstance(value, (int, float)):
                value = [value]
            if name == "std" and any(v <= 0 for v in value):
                raise ValueError(f"--std={value!r} must be positive")
            setattr(args, name, [float(v) for v in value])
    if args.model_ema and not 0.0 < args.model_ema_decay < 1.0:
        raise ValueError(f"--model-ema-decay={args.model_ema_decay!r} must lie in (0, 1)")
    if args.validate_exported and not os.path.exists(args.validate_exported):
        raise ValueError(f"--validate-exported {args.validate_exported}: no such file (pass "
                         f"<output>/exported_target.pth)")
    if args.resume and not os.path.isfile(args.resume):
        raise ValueError(f"--resume {args.resume}: no such checkpoint file (use <output>/last.pth.tar)")
