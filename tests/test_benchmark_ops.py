"""benchmarks/ops.py runs its late-stage shapes (8x8 ... 1x1 inputs) and rejects unknown shape names."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

_OPS = Path(__file__).resolve().parents[1] / "benchmarks" / "ops.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ops", _OPS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_late_stage_shapes_run_when_selected_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's thread count
    ops = _load()
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


def test_unknown_shape_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    ops = _load()
    with pytest.raises(SystemExit):
        ops.main(["--shape", "pw 1->1"])
    err = capsys.readouterr().err
    assert "unknown --shape ['pw 1->1']" in err and "pw 320->1280 @1x1" in err
