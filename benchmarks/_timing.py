"""Shared timing helpers of the benchmark suite (``benchmarks/hybrid.py``, ``train_step.py``, ``integer_inference.py``).

Method (the same as ``benchmarks/ops.py``, which keeps its own inline loop):

* every candidate is timed against a reference measured **in the same process and the same rounds**: one round runs
  the reference, then each candidate, once (or ``inner`` times); rounds repeat, so drift in the machine load hits
  all of them alike;
* warm-up rounds are run and discarded first (first-call costs: allocator growth, oneDNN primitive creation,
  ``torch.compile`` of the adder kernels);
* reported: median and minimum per call, the ratio of medians and the ratio of minimums to the reference (on a
  shared machine contention only ever adds time, so the minimum is the least disturbed estimate), and the spread
  ``(p90 - p10) / median`` of the per-round times (the ops.py definition) so a noisy run is visible;
* ``torch.set_num_threads(N)`` (default 2), the load average before/after and the torch version go into the JSON.

``ops.py`` exposes no reusable loop (its alternating rounds are inline in ``bench_shape`` and its ``_spread`` is
private), hence this module.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Stats:
    """Per-call times of one candidate over the timed rounds (milliseconds)."""

    median_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    spread: float  #: (p90 - p10) / median
    rounds: int
    inner: int  #: calls per round (each round's time is divided by it)
    times_ms: List[float]  #: the raw per-call time of every timed round, in round order


def spread(times: Sequence[float]) -> float:
    """``(p90 - p10) / median`` of the per-round times (0 for fewer than 3 rounds)."""
    if len(times) < 3:
        return 0.0
    qs = statistics.quantiles(times, n=10)
    return (qs[8] - qs[0]) / statistics.median(times)


def summarize(times_s: Sequence[float], inner: int = 1) -> Stats:
    """:class:`Stats` of per-call times given in seconds."""
    if not times_s:
        raise ValueError("summarize() needs at least one timed round")
    ms = [t * 1e3 for t in times_s]
    qs = statistics.quantiles(ms, n=10) if len(ms) >= 3 else [min(ms)] * 9
    return Stats(statistics.median(ms), min(ms), qs[0], qs[8], spread(ms), len(ms), inner, [round(t, 4) for t in ms])


def _time_once(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def calibrate_inner(fn: Callable[[], Any], min_round_s: float, max_inner: int = 1000) -> int:
    """Calls per round so that one round of ``fn`` lasts at least ``min_round_s`` (for sub-millisecond calls)."""
    if min_round_s <= 0:
        return 1
    per_call = min(_time_once(fn, 1) for _ in range(3))
    return int(max(1, min(max_inner, -(-min_round_s // max(per_call, 1e-9)))))


def alternating_rounds(fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 2, inner: int = 1,
                       on_round: Optional[Callable[[int], None]] = None) -> Dict[str, List[float]]:
    """Time every callable once (``inner`` calls) per round, in dict order, for ``warmup + rounds`` rounds.

    Returns ``{name: [seconds per call, one entry per timed round]}``; warm-up rounds are discarded. Put the reference
    first. ``gc`` is collected before the rounds and disabled while timing (a collection inside one candidate's call
    would be charged to it alone). ``on_round(i)`` runs after each timed round, outside the timed region.
    """
    if rounds < 1 or warmup < 0 or inner < 1:
        raise ValueError(f"need rounds >= 1, warmup >= 0, inner >= 1; got {rounds}, {warmup}, {inner}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(rounds):
            for name, fn in fns.items():
                times[name].append(_time_once(fn, inner))
            if on_round is not None:
                on_round(i)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def ratios(times: Mapping[str, Sequence[float]], candidate: str, reference: str) -> Dict[str, float]:
    """``{'median': ratio of medians, 'min': ratio of minimums}`` of ``candidate`` over ``reference``."""
    cand, ref = times[candidate], times[reference]
    return {"median": statistics.median(cand) / statistics.median(ref), "min": min(cand) / min(ref)}


def fmt_ratio(value: float, target: Optional[float] = None) -> str:
    """``'1.23x'``, with ``' (!)'`` appended when a target is given and missed."""
    flag = "" if target is None or value <= target else " (!)"
    return f"{value:.2f}x{flag}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def uptime() -> str:
    """The ``uptime`` line (load averages), or the load averages alone if ``uptime`` is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machine_info(threads: int) -> Dict[str, Any]:
    """Environment facts recorded with every result (the numbers only make sense next to them)."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def add_common_args(parser: argparse.ArgumentParser, name: str, rounds: int, quick_rounds: int,
                    warmup: int) -> None:
    """``--quick``, ``--json`` (default ``benchmarks/results/<name>.json``), ``--rounds``, ``--warmup``,
    ``--threads`` (default 2)."""
    parser.add_argument("--quick", action="store_true", help="a small subset with fewer rounds (smoke run)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / f"{name}.json",
                        help=f"write the results as JSON here (default benchmarks/results/{name}.json)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"timed alternating rounds (default {rounds}; --quick {quick_rounds})")
    parser.add_argument("--warmup", type=int, default=None, help=f"discarded warm-up rounds (default {warmup})")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")


def resolve_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace, rounds: int, quick_rounds: int,
                        warmup: int) -> tuple[int, int]:
    """Validate the common flags, apply ``--threads``; returns ``(rounds, warmup)``."""
    n_rounds = args.rounds if args.rounds is not None else (quick_rounds if args.quick else rounds)
    n_warmup = args.warmup if args.warmup is not None else warmup
    if n_rounds < 1:
        parser.error(f"--rounds must be >= 1, got {n_rounds}")
    if n_warmup < 0:
        parser.error(f"--warmup must be >= 0, got {n_warmup}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    return n_rounds, n_warmup


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (dataclasses converted) as indented JSON, creating the folder."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return asdict(obj)
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=default) + "\n")


def fwd_bwd_step(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """A closure running one forward + backward (input and parameter gradients) of ``module`` on ``x``."""
    def step() -> None:
        x.grad = None
        for p in module.parameters():
            p.grad = None
        module(x).backward(grad)

    return step
