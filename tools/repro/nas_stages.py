"""The NAS stages that come before the searched networks are trained (groups ``nas-mcunet`` / ``nas-proxy``).

Everything is written under ``<results>/nas/`` and every stage is skipped when its output exists (the searches also
resume their SQLite study), so the whole pipeline is resumable like the training runs:

1. ``supernet.pth``: the multiplicative weight-sharing supernet (``nas.cli train-supernet``, space ``mcunet``) on a
   slice of the Fashion-MNIST training split; its held-out slice is the search's accuracy proxy (the test split is
   never read before the searched networks are trained).
2. the **cost limits** (``limits.json``): energy and peak activation memory of the hand-designed MF target the
   search must match, MCUNet with shift layers (``shiftadd_mcunet``, ``op=shift``), from the same cost model the
   training runs report (``shiftaddaug_plugin.cost``).
3. ``search-shift``: arch search of an all-shift target within those limits (objective: energy).
4. ``search-nasa``: the same with NASA's per-block operator choice (mult / shift / adder; shift outside the blocks).
5. ``deep/arch.json`` + ``select-shift``: stage 2. The deep network is search-shift's target with every stage at
   the space's largest depth (the added blocks repeat the stage's last block), so it exceeds the limit; the
   select search then chooses its target blocks within the limit, and the unselected blocks are the depth
   augmentation (``depth_aug.json``). (A second arch search with a looser limit was tried first: its proxy picked
   the same network as search-shift, which then had nothing to drop.)
6. ``proxy/arch_<i>.json``: ``NAS_PROXY_ARCHS`` feasible candidates of ``search-shift`` spread evenly over the
   proxy's range (the chosen one included), trained once each (group ``nas-proxy``) to measure the proxy's rank
   correlation with trained accuracy (tools/repro/nas_report.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from repro.files import write_json_atomically
from repro.paths import REPO
from repro.plan import NAS_PROXY_ARCHS, Budget

#: the hand-designed network the search must match in cost, and its operator
REFERENCE_MODEL = "shiftadd_mcunet"
REFERENCE_OP = "shift"


@dataclass(frozen=True)
class NasSettings:
    """Search effort per budget preset (the trained rows use the preset's training budget)."""

    space: str
    img_size: int
    supernet_train_images: int
    supernet_holdout_images: int
    supernet_epochs: int
    trials: int
    population: int
    recal_images: int = 500
    supernet_batch_size: int = 128


NAS_SETTINGS: dict[str, NasSettings] = {
    "small": NasSettings("mcunet", 32, 1500, 2000, 6, 40, 10),
    "medium": NasSettings("mcunet", 32, 6000, 2000, 12, 120, 20),
    "large": NasSettings("mcunet", 32, 24000, 2000, 12, 200, 24),
    "paper": NasSettings("mcunet", 32, 50000, 10000, 60, 400, 40),
}


def settings_for(budget_name: str, budget: Budget) -> NasSettings:
    """The preset's search effort at the budget's image size."""
    base = NAS_SETTINGS[budget_name]
    return NasSettings(**{**asdict(base), "img_size": budget.img_size})


def reference_limits(img_size: int, model: str = REFERENCE_MODEL, op: str = REFERENCE_OP) -> dict[str, float]:
    """Energy (uJ) and peak activation memory (KiB) per image of the exported MF ``model`` (1 x img x img input,
    10 classes), counted by ``shiftaddaug_plugin.cost`` as the training runs count their exported targets."""
    import timm

    import shiftaddaug_plugin.models  # noqa: F401 - registers the shiftadd_* models
    from shiftaddaug_plugin.cost import count_ops

    net = timm.create_model(model, num_classes=10, in_chans=1, op=op)
    report = count_ops(net, (1, img_size, img_size))
    return {"model": model, "op": op, "img_size": img_size, "energy_uj": report.energy_pj * 1e-6,
            "peak_kb": report.peak_activation_bytes / 1024.0, "macs": report.macs}


def _nas_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shiftaddaug_plugin.nas.cli", "--threads", "1", *args]


def stage_commands(nas_dir: Path, settings: NasSettings, limits: dict[str, float],
                   seed: int = 0) -> list[tuple[str, list[str], Path]]:
    """``(stage name, command, output file)`` of stages 1, 3, 4 and 5's select search, in order (the limits and the
    deep arch are computed in this process)."""
    supernet = nas_dir / "supernet.pth"
    cap = ["--max-energy-uj", repr(limits["energy_uj"]), "--max-peak-kb", repr(limits["peak_kb"])]
    effort = ["--n-trials", str(settings.trials), "--population", str(settings.population), "--seed", str(seed),
              "--recal-images", str(settings.recal_images), "--objective", "energy_uj"]

    def search(name: str, *extra: str) -> tuple[str, list[str], Path]:
        out = nas_dir / name
        target = "depth_aug.json" if "select" in extra else "arch.json"
        return name, _nas_cli("search", "--supernet", str(supernet), "--out-dir", str(out), *effort, *extra), \
            out / target

    return [
        ("supernet", _nas_cli("train-supernet", "--space", settings.space, "--img-size", str(settings.img_size),
                              "--train-images", str(settings.supernet_train_images),
                              "--holdout-images", str(settings.supernet_holdout_images),
                              "--epochs", str(settings.supernet_epochs),
                              "--batch-size", str(settings.supernet_batch_size), "--seed", str(seed),
                              "--out", str(supernet)), supernet),
        search("search-shift", "--ops", "shift", "--base-op", "shift", *cap),
        search("search-nasa", "--ops", "mult,shift,adder", "--base-op", "shift", *cap),
        search("select-shift", "--mode", "select", "--deep-arch", str(nas_dir / "deep" / "arch.json"), *cap),
    ]


def write_deep_arch(nas_dir: Path, space_name: str) -> Path:
    """Stage 5's deep network: ``search-shift/arch.json`` with every stage at the space's largest depth, the added
    blocks repeating the stage's last block -> ``deep/arch.json``."""
    from shiftaddaug_plugin.nas.space import SPACE_PRESETS, Arch, StageArch

    target = Arch.from_json(nas_dir / "search-shift" / "arch.json")
    depth = SPACE_PRESETS[space_name].max_depth
    stages = tuple(StageArch(s.out_chs, s.stride, tuple(s.blocks) + (s.blocks[-1],) * (depth - len(s.blocks)))
                   for s in target.stages)
    deep = Arch(stages, target.stem_chs, target.ds_chs, target.head_conv_chs, target.base_op)
    path = nas_dir / "deep" / "arch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    deep.to_json(str(path), deepened_from="search-shift/arch.json", depth=depth)
    return path


def pick_spread(candidates: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """``k`` candidates evenly spread over the sorted proxy accuracies (highest first, so the search's choice is
    included; distinct trials; fewer if there are fewer candidates)."""
    ranked = sorted(candidates, key=lambda c: (-float(c["accuracy"]), int(c["trial"])))
    if len(ranked) <= k:
        return ranked
    if k == 1:
        return ranked[:1]
    picks = [ranked[round(i * (len(ranked) - 1) / (k - 1))] for i in range(k)]
    return list({int(c["trial"]): c for c in picks}.values())


def write_proxy_archs(nas_dir: Path, k: int = NAS_PROXY_ARCHS) -> list[Path]:
    """Stage 6: ``proxy/arch_<i>.json`` from ``search-shift/candidates.json`` (module docstring)."""
    from shiftaddaug_plugin.nas.space import Arch

    summary = json.loads((nas_dir / "search-shift" / "candidates.json").read_text())
    out_dir = nas_dir / "proxy"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, cand in enumerate(pick_spread(summary["candidates"], k), start=1):
        path = out_dir / f"arch_{i}.json"
        Arch.from_dict(cand["arch"]).to_json(str(path), search={"trial": cand["trial"],
                                                                 "accuracy_proxy": cand["accuracy"],
                                                                 "cost": cand["cost"], "source": "search-shift"})
        paths.append(path)
    return paths


def _run_stage(name: str, cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        return subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=str(REPO))


def prepare_nas(results_dir: Path, budget_name: str, budget: Budget, *,
                run: Callable[[str, list[str], Path], int] = _run_stage,
                limits_fn: Callable[[int], dict[str, float]] = reference_limits,
                print_fn: Callable[[str], None] = print, settings: NasSettings | None = None) -> bool:
    """Run the missing stages (module docstring); ``True`` when they all finished. A failed stage stops the
    pipeline (its log under ``nas/``) and returns ``False``; rerunning resumes. ``settings`` overrides the
    preset's search effort (tests)."""
    results_dir = results_dir.resolve()  # the stages run with the repository as working directory
    nas_dir = results_dir / "nas"
    nas_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or settings_for(budget_name, budget)
    limits_path = nas_dir / "limits.json"
    if limits_path.is_file():
        limits = json.loads(limits_path.read_text())
    else:
        limits = limits_fn(settings.img_size)
        write_json_atomically(limits_path, {**limits, "settings": asdict(settings)}, indent=1)
    print_fn(f"nas: limits of the hand-designed target ({limits.get('model', REFERENCE_MODEL)}, "
             f"{limits.get('op', REFERENCE_OP)}): energy {limits['energy_uj']:.4g} uJ, "
             f"peak {limits['peak_kb']:.4g} KiB")
    for name, cmd, output in stage_commands(nas_dir, settings, limits):
        if output.is_file():
            print_fn(f"nas: {name} done ({output.relative_to(results_dir)})")
            continue
        if name == "select-shift" and not (nas_dir / "deep" / "arch.json").is_file():
            print_fn(f"nas: deep network -> {write_deep_arch(nas_dir, settings.space).relative_to(results_dir)}")
        print_fn(f"nas: {name} running (log {(nas_dir / f'{name}.log').relative_to(results_dir)})")
        start = time.time()
        code = run(name, cmd, nas_dir / f"{name}.log")
        if code != 0 or not output.is_file():
            print_fn(f"nas: {name} FAILED (exit {code}); see {nas_dir / f'{name}.log'}")
            return False
        print_fn(f"nas: {name} finished in {time.time() - start:.0f}s")
    if not (nas_dir / "proxy" / "arch_1.json").is_file():
        paths = write_proxy_archs(nas_dir)
        print_fn(f"nas: {len(paths)} architectures for the proxy correlation -> {nas_dir / 'proxy'}")
    return True
