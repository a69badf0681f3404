"""benchmarks/ops.py runs its late-stage shapes (8x8 ... 1x1 inputs) and rejects unknown shape names."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


def test_late_stage_shapes_run_when_selected_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     load_benchmark: Callable[[str], ModuleType]) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's thread count
    ops = load_benchmark("ops")
    late = [s for s in ops.SHAPES if s.size is not None]
    assert {s.size for s in late} >= {8, 4, 2, 1}
    out = tmp_path / "ops.json"
    names = ["dw3x3 480 s2 @2x2", "pw 320->1280 @1x1"]  # in table order
    argv = ["--batch", "2", "--repeats", "1", "--threads", "1", "--json", str(out)]
    for name in names:
        argv += ["--shape", name]
    assert ops.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == names
    for row in rows:
        assert row["conv_ms"] > 0 and row["adder_ms"] > 0 and row["adder_mb"] >= 0


def test_unknown_shape_is_named(capsys: pytest.CaptureFixture[str],
                                load_benchmark: Callable[[str], ModuleType]) -> None:
    ops = load_benchmark("ops")
    with pytest.raises(SystemExit):
        ops.main(["--shape", "pw 1->1"])
    err = capsys.readouterr().err
    assert "unknown --shape ['pw 1->1']" in err and "pw 320->1280 @1x1" in err


def test_hybrid_benchmark_runs_late_shapes_at_their_own_size(monkeypatch: pytest.MonkeyPatch,
                                                              load_benchmark: Callable[[str], ModuleType]) -> None:
    """hybrid.py borrows ops.py's shapes: an ``@1x1`` shape must get a 1x1 input, not the 32x32 default."""
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    ops, hybrid = load_benchmark("ops"), load_benchmark("hybrid")
    late = next(s for s in ops.SHAPES if s.name == "pw 320->1280 @1x1")
    rows = hybrid.bench_conv_shape(late, 1.2, batch=2, size=32, rounds=1, warmup=0, min_round_s=0.0)
    assert [(r.mode, r.size) for r in rows] == [("target", 1), ("augmented", 1)]
    first = next(s for s in ops.SHAPES if s.size is None)
    assert {r.size for r in hybrid.bench_conv_shape(first, 1.2, batch=2, size=8, rounds=1, warmup=0,
                                                    min_round_s=0.0)} == {8}
