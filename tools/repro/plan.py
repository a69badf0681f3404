"""Budgets, experiment groups and the expanded run plan of tools/reproduce.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


# ----------------------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """Training budget shared by every row of a preset (see the module docstring)."""

    train_subset: int | None
    val_subset: int | None
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: int
    bn_recal_images: int
    eval_interval: int
    img_size: int
    seeds: tuple[int, ...]
    seg_iters: int
    seg_batch: int
    seg_train_images: int
    seg_val_images: int
    seg_seeds: tuple[int, ...]
    #: evaluate on ``val_subset`` images held out of the training split (``--split holdout``: choosing settings)
    #: instead of the official test split (reporting)
    holdout: bool = False


BUDGETS: dict[str, Budget] = {
    "small": Budget(train_subset=1500, val_subset=2000, epochs=5, batch_size=64, lr=0.05, warmup_epochs=1,
                    bn_recal_images=500, eval_interval=5, img_size=32, seeds=(0, 1, 2),
                    seg_iters=300, seg_batch=8, seg_train_images=400, seg_val_images=100, seg_seeds=(0,)),
    "medium": Budget(train_subset=6000, val_subset=2000, epochs=6, batch_size=64, lr=0.05, warmup_epochs=1,
                     bn_recal_images=500, eval_interval=6, img_size=32, seeds=(0, 1, 2),
                     seg_iters=800, seg_batch=8, seg_train_images=800, seg_val_images=100, seg_seeds=(0,)),
    "large": Budget(train_subset=24000, val_subset=2000, epochs=8, batch_size=64, lr=0.05, warmup_epochs=1,
                    bn_recal_images=500, eval_interval=2, img_size=32, seeds=(0,),
                    seg_iters=1600, seg_batch=8, seg_train_images=1600, seg_val_images=100, seg_seeds=(0,)),
    "paper": Budget(train_subset=None, val_subset=None, epochs=100, batch_size=128, lr=0.05, warmup_epochs=5,
                    bn_recal_images=2000, eval_interval=5, img_size=32, seeds=(0, 1, 2, 3, 4),
                    seg_iters=400, seg_batch=16, seg_train_images=2000, seg_val_images=300, seg_seeds=(0, 1, 2)),
}


# ----------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class RowSpec:
    """One table row: ``label`` plus the training flags that make it (operator, augmentation, ablation switch)."""

    label: str
    op: str
    aug: bool
    extra: tuple[str, ...] = ()
    convert_kwargs: tuple[tuple[str, Any], ...] = ()
    #: further model kwargs (e.g. ``width_mult``), passed as ``--model-kwargs key=value``
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    #: ``shiftadd_custom`` rows: the architecture JSON, relative to the results folder (written by the NAS stages)
    arch: str = ""


_MAIN_ROWS: tuple[RowSpec, ...] = (
    RowSpec("Mult", "mult", False),
    RowSpec("NetAug", "mult", True),
    RowSpec("Shift", "shift", False),
    RowSpec("ShiftAug", "shift", True),
    RowSpec("Add", "adder", False),
    RowSpec("AddAug", "adder", True),
)
#: segmentation has no NetAug row (the multiplicative reference is enough there)
_SEG_ROWS: tuple[RowSpec, ...] = tuple(row for row in _MAIN_ROWS if row.label != "NetAug")

#: Searched networks (tools/repro/nas_stages.py writes the arch files; shift targets, MCUNet's NetAug width list).
#: "NAS": best proxy under the MF MCUNet's energy and peak memory; "+depth-aug": stage 2's target trained with its
#: deep network's extra blocks as depth augmentation; "NASA": per-block operator choice (mult / shift / adder).
NAS_ROWS: tuple[RowSpec, ...] = (
    RowSpec("NAS Shift", "shift", False, arch="nas/search-shift/arch.json"),
    RowSpec("NAS ShiftAug", "shift", True, arch="nas/search-shift/arch.json"),
    RowSpec("NAS ShiftAug+depth-aug", "shift", True, arch="nas/select-shift/depth_aug.json"),
    RowSpec("NASA Shift", "shift", False, arch="nas/search-nasa/arch.json"),
)
#: how many searched architectures, spread over the proxy's range, are trained (one row each) to measure the rank
#: correlation between the accuracy proxy and the trained accuracy
NAS_PROXY_ARCHS = 6
NAS_PROXY_ROWS: tuple[RowSpec, ...] = tuple(
    RowSpec(f"proxy-{i}", "shift", False, arch=f"nas/proxy/arch_{i}.json") for i in range(1, NAS_PROXY_ARCHS + 1))

#: The under-fitting test: the main rows on MCUNet at a third of its width (``width_mult`` 0.35), where the target
#: has far less capacity, to see whether augmentation gains where the network is too small for the data.
TINY_WIDTH = 0.35
TINY_ROWS: tuple[RowSpec, ...] = tuple(
    RowSpec(f"{row.label} {TINY_WIDTH}x", row.op, row.aug, model_kwargs=(("width_mult", TINY_WIDTH),))
    for row in _MAIN_ROWS if row.op in ("mult", "shift"))

#: group -> (kind, model, rows). Ablation rows compare against the main table's row of the same seed.
GROUPS: dict[str, tuple[str, str, tuple[RowSpec, ...]]] = {
    "main-mcunet": ("cls", "shiftadd_mcunet", _MAIN_ROWS),
    "main-mbv2": ("cls", "shiftadd_mbv2_tiny", _MAIN_ROWS),
    "ablation-remap": ("cls", "shiftadd_mcunet", (
        RowSpec("AddAug+remap", "adder", True, convert_kwargs=(("remap", True),)),)),
    "ablation-block-variant": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug+block-variant", "shift", True, extra=("--block-variant", "linear")),
        RowSpec("AddAug+block-variant", "adder", True, extra=("--block-variant", "linear")),
        RowSpec("AddAug+block-variant no-remap", "adder", True,
                extra=("--block-variant", "linear", "--no-block-variant-remap")))),
    "ablation-sort-scope": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug sort-augmented", "shift", True, extra=("--sort-scope", "augmented")),
        RowSpec("AddAug sort-augmented", "adder", True, extra=("--sort-scope", "augmented")))),
    "ablation-sort-remap": ("cls", "shiftadd_mcunet", (
        RowSpec("AddAug no-sort-remap", "adder", True, extra=("--no-sort-remap",)),)),
    "ablation-sort-remap-mbv2": ("cls", "shiftadd_mbv2_tiny", (
        RowSpec("AddAug no-sort-remap", "adder", True, extra=("--no-sort-remap",)),)),
    "ablation-sort-scope-mbv2": ("cls", "shiftadd_mbv2_tiny", (
        RowSpec("ShiftAug no-sort", "shift", True, extra=("--sort-interval", "0")),
        RowSpec("ShiftAug sort-augmented", "shift", True, extra=("--sort-scope", "augmented")))),
    "ablation-aug-dims": ("cls", "shiftadd_mcunet", (
        RowSpec("ShiftAug width-only", "shift", True, extra=("--aug-expand-list", "1.0")),
        RowSpec("ShiftAug expand-only", "shift", True, extra=("--aug-width-mult-list", "1.0")))),
    "regime-tiny-mcunet": ("cls", "shiftadd_mcunet", TINY_ROWS),
    "nas-mcunet": ("cls", "shiftadd_custom", NAS_ROWS),
    "nas-proxy": ("cls", "shiftadd_custom", NAS_PROXY_ROWS),
    "seg": ("seg", "mbv2_tiny_fcn", _SEG_ROWS),
    "seg-brain": ("seg", "mbv2_tiny_fcn_brain", _SEG_ROWS),
    "seg-nuclei": ("seg", "mbv2_tiny_fcn_nuclei", _SEG_ROWS),
    # segmentation rows take mmengine --cfg-options as extra flags
    "ablation-seg-nuclei-sort": ("seg", "mbv2_tiny_fcn_nuclei", (
        RowSpec("ShiftAug no-sort", "shift", True, extra=("custom_hooks.0.sort_interval=None",)),
        RowSpec("ShiftAug sort-augmented", "shift", True, extra=("custom_hooks.0.sort_scope=augmented",)))),
}
#: NetAug's width lists (docs/algorithms.md §4); the expand list [1.0, 1.6, 2.2, 2.8] comes from the yaml recipe
#: (the searched networks take MCUNet's: they are compared with it)
_NETAUG_WIDTH = {"shiftadd_mcunet": (1.0, 1.6, 2.2), "shiftadd_mbv2_tiny": (1.0, 1.8, 2.6),
                 "shiftadd_custom": (1.0, 1.6, 2.2)}
_SHORT_MODEL = {"shiftadd_mcunet": "mcunet", "shiftadd_mbv2_tiny": "mbv2tiny", "shiftadd_custom": "custom",
                "mbv2_tiny_fcn": "mbv2tinyfcn",
               "mbv2_tiny_fcn_brain": "brain-mbv2tinyfcn", "mbv2_tiny_fcn_nuclei": "nuclei-mbv2tinyfcn"}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the plan; ``name`` is its folder under ``results/runs``."""

    name: str
    group: str
    kind: str  # 'cls' | 'seg'
    model: str
    row: str
    seed: int
    op: str
    aug: bool
    extra: tuple[str, ...] = ()
    convert_kwargs: tuple[tuple[str, Any], ...] = ()
    arch: str = ""
    model_kwargs: tuple[tuple[str, Any], ...] = ()


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """``'main-mcunet,seg'`` -> ``['main-mcunet', 'seg']`` (all groups if empty). ``ValueError`` on unknown names."""
    if only is None or only == "" or only == []:
        return list(GROUPS)
    items = only.split(",") if isinstance(only, str) else [p for o in only for p in o.split(",")]
    names = [i.strip() for i in items if i.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise ValueError(f"--only: unknown experiment group(s) {unknown}; choose from {', '.join(GROUPS)} "
                         "(comma separated)")
    return list(dict.fromkeys(names))


def expand_plan(groups: Sequence[str], budget: Budget, seeds: Sequence[int] | None = None,
                rows: Sequence[str] | None = None) -> list[RunSpec]:
    """Every run of ``groups`` (rows x seeds), seed-major so that partial results cover whole seeds first;
    ``rows`` keeps only the rows with those labels (``ValueError`` if a label matches no row of ``groups``)."""
    if rows is not None:
        known = {row.label for g in groups if g in GROUPS for row in GROUPS[g][2]}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"--rows: {unknown} match no row of groups {list(groups)}; rows there: {sorted(known)}")
    plan: list[RunSpec] = []
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown experiment group {group!r}; choose from {', '.join(GROUPS)}")
        kind, model, _ = GROUPS[group]
        group_seeds = tuple(seeds) if seeds is not None else (budget.seg_seeds if kind == "seg" else budget.seeds)
        for seed in group_seeds:
            for row in GROUPS[group][2]:
                if rows is not None and row.label not in rows:
                    continue
                name = f"{_SHORT_MODEL[model]}_{_slug(row.label)}_s{seed}" if kind == "cls" else \
                    f"seg_{_SHORT_MODEL[model]}_{_slug(row.label)}_s{seed}"
                plan.append(RunSpec(name=name, group=group, kind=kind, model=model, row=row.label, seed=int(seed),
                                    op=row.op, aug=row.aug, extra=row.extra, convert_kwargs=row.convert_kwargs,
                                    arch=row.arch, model_kwargs=row.model_kwargs))
    names = [r.name for r in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate run names in the plan: {sorted(n for n in names if names.count(n) > 1)}")
    return plan
