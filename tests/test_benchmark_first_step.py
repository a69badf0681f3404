"""benchmarks/first_step.py: cold and warm child processes share one cache folder and report their first steps."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_cold_and_warm_children_report_first_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   load_benchmark: Callable[[str], ModuleType]) -> None:
    first_step = load_benchmark("first_step")
    out = tmp_path / "first_step.json"
    argv = ["--models", "lcnet_050", "--batch", "2", "--size", "16", "--steps", "2", "--threads", "1",
            "--cache-root", str(tmp_path), "--json", str(out), "--backend", "native"]  # no per-shape compiling
    assert first_step.main(argv) == 0
    result = json.loads(out.read_text())["models"]["lcnet_050"]
    assert set(result) == {"cold", "warm"}
    for phase in result.values():
        assert len(phase["mf"]["step_s"]) == 2 and len(phase["plain"]["step_s"]) == 2
        assert all(t > 0 for t in phase["mf"]["step_s"] + phase["plain"]["step_s"])
        assert phase["adder_kernel_entries"] == 0  # native: nothing compiled per shape or autotuned
        assert phase["backend"] == "native"
        assert phase["process_s"] >= phase["mf"]["build_s"] + sum(phase["mf"]["step_s"])
    assert json.loads(out.read_text())["backend"] == "native"
    assert list(tmp_path.iterdir()) == [out]  # the per-run cache folders are removed


def test_a_failing_child_is_reported_with_its_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   load_benchmark: Callable[[str], ModuleType]) -> None:
    first_step = load_benchmark("first_step")
    with pytest.raises(SystemExit, match="the child process for no_such_model_xyz failed"):
        first_step.main(["--models", "no_such_model_xyz", "--steps", "2", "--cache-root", str(tmp_path),
                         "--json", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()
