"""Cold start: how long a new adder model takes to its first training step, with an empty and a warm compile cache.

Usage::

    .venv/bin/python benchmarks/first_step.py [--quick] [--json PATH] [--models ...] [--threads 2]

With the default ``auto`` backend on the CPU the adder runs the shape-generic native kernels, built once per
machine from ``native/adder.c`` (``SHIFTADDAUG_NATIVE_CACHE``); with ``--backend compiled`` it compiles one
inductor kernel per formulation and layer shape on first use, cached on disk (``TORCHINDUCTOR_CACHE_DIR``). For
every model, two fresh Python processes run the same script (``--child``) against one cache folder (both caches)
created for the run:

* **cold**: the folder is empty (a new machine, or a model whose layer shapes no earlier process compiled);
* **warm**: the same folder again, filled by the cold process (a second run on the same machine; copy the folder
  to carry it to another machine of the same kind).

Each child builds the model, then times three training steps of the multiplication-free network
(``ShiftAddAugTask`` with ``augment=False``: forward, backward, SGD step; batch 64, 32 px, 10 classes) and,
as the reference measured in the same process, three steps of the same architecture with ``op='mult'``. Reported:
build time, first-step latency (what a user waits for), the steady step after it, the number of adder layer
shapes and of compiled adder kernels, and the dynamo/inductor compile time the process spent. Models given as
timm architecture names are converted with ``convert(model, ConvertConfig(op='adder'))`` and exported to their
slim target (as ``shiftadd_*`` models with ``aug=False`` are).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import RESULTS_DIR, machine_info, markdown_table, uptime, write_json  # noqa: E402

DEFAULT_MODELS = ["lcnet_050", "mobilenetv3_small_050", "shiftadd_mcunet"]
_RESULT_TAG = "FIRST_STEP_RESULT "


def _build(name: str, op: str, num_classes: int, size: int) -> Any:
    import timm
    import torch

    import shiftaddaug_plugin.models  # noqa: F401 - registers the shiftadd_* models

    if name.startswith("shiftadd_"):
        return timm.create_model(name, pretrained=False, num_classes=num_classes, op=op)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if op == "mult":
        return model
    from shiftaddaug_plugin.convert import ConvertConfig, convert, export

    config = ConvertConfig(op=op, aug_width_mult_list=[1.0], aug_expand_list=[1.0])
    return export(convert(model, config, example_input=torch.randn(1, 3, size, size)))


def _timed_steps(name: str, op: str, args: argparse.Namespace, steps: int) -> Dict[str, Any]:
    import torch

    from shiftaddaug_plugin.train.augtrain import ShiftAddAugTask

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = _build(name, op, args.num_classes, args.size)
    task = ShiftAddAugTask(model, augment=False, criterion_kwargs={"smoothing": 0.1}, verbose=False)
    task.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    build_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    targets = torch.randint(0, args.num_classes, (args.batch,), generator=g)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = task(images, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {"build_s": build_s, "step_s": times}


def child(args: argparse.Namespace) -> int:
    """One fresh process: the MF model's first steps, then the plain reference's, as one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from shiftaddaug_plugin.functional import adder

    mf = _timed_steps(args.child, "adder", args, args.steps)
    entries = len(adder.autotune_choices())
    plain = _timed_steps(args.child, "mult", args, args.steps)
    print(_RESULT_TAG + json.dumps({"mf": mf, "plain": plain, "adder_kernel_entries": entries,
                                    "backend": adder.resolve_backend()}), flush=True)
    return 0


def _run_child(model: str, cache: Path, args: argparse.Namespace) -> Dict[str, Any]:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
               SHIFTADDAUG_NATIVE_CACHE=str(cache / "native"), SHIFTADDAUG_ADDER_BACKEND=args.backend)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model, "--threads", str(args.threads),
           "--batch", str(args.batch), "--size", str(args.size), "--num-classes", str(args.num_classes),
           "--steps", str(args.steps), "--seed", str(args.seed)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"first_step: the child process for {model} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(_RESULT_TAG):])
    result["process_s"] = wall
    return result


def _row(model: str, phase: str, r: Dict[str, Any]) -> List[str]:
    mf, plain = r["mf"], r["plain"]
    steady = min(mf["step_s"][1:]) if len(mf["step_s"]) > 1 else float("nan")
    plain_steady = min(plain["step_s"][1:]) if len(plain["step_s"]) > 1 else float("nan")
    return [model, r.get("backend", "compiled"), phase, f"{mf['build_s']:.1f}", f"{mf['step_s'][0]:.1f}",
            f"{plain['step_s'][0]:.2f}",
            f"{steady * 1e3:.0f} ({steady / plain_steady:.2f}x)", str(r["adder_kernel_entries"]),
            f"{r['process_s']:.0f}"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model (lcnet_050)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "first_step.json",
                        help="write the results as JSON here (default benchmarks/results/first_step.json)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in the children (default 2)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                        help="timm architectures (converted to adder) or shiftadd_* models "
                             f"(default: {' '.join(DEFAULT_MODELS)}; --quick: lcnet_050)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=["auto", "native", "compiled", "eager"],
                        help="SHIFTADDAUG_ADDER_BACKEND in the children (default auto: native on the CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per child and model (default 3)")
    parser.add_argument("--cache-root", type=Path, default=None,
                        help="where the per-model cache folders are made (default: a temporary folder, removed)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch < 1 or args.size < 8 or args.threads < 1:
        parser.error("need --steps >= 2, --batch >= 1, --size >= 8, --threads >= 1")
    if args.child is not None:
        return child(args)
    if args.quick and args.models == parser.get_default("models"):
        args.models = ["lcnet_050"]
    load_before = uptime()
    print(f"# First training step of a new adder model, batch {args.batch}, 3x{args.size}x{args.size}, "
          f"{args.threads} threads, adder backend {args.backend}; each phase is a fresh process")
    print(f"# machine: {load_before}", flush=True)
    results: Dict[str, Dict[str, Any]] = {}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache_root) as root:
        for model in args.models:
            cache = Path(root) / model
            cache.mkdir()
            results[model] = {}
            for phase in ("cold", "warm"):
                print(f"#   {model} {phase} ...", flush=True)
                results[model][phase] = r = _run_child(model, cache, args)
                rows.append(_row(model, phase, r))
    load_after = uptime()
    header = ["model", "adder backend", "cache", "build s", "first MF step s", "first plain step s",
              "steady MF ms (vs plain)", "adder (phase, shape) kernels", "process s"]
    print("\n" + markdown_table(header, rows))
    print("\nfirst step = the first training step after building (compiles the adder kernels of every layer shape "
          "it meets); targets (issue 15): cold <= 30 s (stretch 10 s), warm <= 5 s.")
    print(f"# machine after: {load_after}")
    write_json(args.json, {"benchmark": "first_step", "backend": args.backend, "batch": args.batch, "size": args.size,
                           "steps": args.steps, "load_before": load_before, "load_after": load_after,
                           "machine": machine_info(args.threads), "models": results})
    print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
