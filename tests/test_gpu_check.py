"""benchmarks/gpu_check.py: runs on the CPU with the device argument, its correctness checks pass on correct
operators and fail (exit 1) on a wrong one; --device cuda without a GPU is a clear error."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

_ARGV = ["--device", "cpu", "--quick", "--rounds", "1", "--warmup", "0", "--threads", "1", "--batch", "2"]


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch, load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's thread count
    return load_benchmark("gpu_check")


def test_naive_reference_matches_a_hand_computed_case(gpu_check: ModuleType) -> None:
    x = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])  # (1, 1, 2, 2)
    w = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # (1, 1, 2, 2): one output pixel, no padding
    y = gpu_check.naive_adder_float64(x, w, stride=1, padding=0, groups=1)
    assert y.shape == (1, 1, 1, 1) and y.item() == -(1.0 + 3.0 + 0.5 + 3.0)


def test_runs_on_cpu_and_every_check_passes(gpu_check: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*_ARGV, "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["device"] == "cpu" and len(payload["checks"]) == 8 and all(c["ok"] for c in payload["checks"])
    assert {row["model"] for row in payload["steps"]} == {"shiftadd_mbv2_tiny"}
    step = payload["steps"][0]
    assert step["mf-adder_vs_plain"]["median"] > 0 and step["saa_adder_vs_netaug"]["median"] > 0


def test_a_wrong_adder_fails_the_check(gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    naive = gpu_check.naive_adder_float64
    monkeypatch.setattr(gpu_check, "naive_adder_float64", lambda *a, **k: naive(*a, **k) * 1.01)
    assert gpu_check.main([*_ARGV, "--no-steps", "--json", str(tmp_path / "g.json")]) == 1
    assert "correctness check(s) failed on cpu" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error(gpu_check: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--quick"])
    assert "torch sees no CUDA device" in capsys.readouterr().err
