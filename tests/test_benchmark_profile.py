"""benchmarks/profile_step.py: its breakdown accounts for the whole step and books the adder phases by shape."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


def test_categories_follow_the_first_matching_rule(load_benchmark: Callable[[str], ModuleType]) -> None:
    prof = load_benchmark("profile_step")
    assert prof.category_of("adder.forward pw 8->16 k1 s1 @4x4") == "adder forward"
    assert prof.category_of("aten::convolution_backward") == "conv"
    assert prof.category_of("aten::native_batch_norm_backward") == "batch norm"
    assert prof.category_of("aten::cat") == "slice/cat/copy"
    assert prof.category_of("autograd::engine::evaluate_function: AddBackward0") == "autograd engine"
    assert prof.category_of("aten::hardtanh_backward") == "element-wise"
    assert prof.category_of("my_custom_op") == "other"


def test_profile_accounts_for_the_step_and_names_adder_shapes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              load_benchmark: Callable[[str], ModuleType]) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")  # no compilation in the suite
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    prof = load_benchmark("profile_step")
    from shiftaddaug_plugin.functional import adder

    originals = (adder._forward, adder._input_grad, adder._weight_grad)
    out = tmp_path / "profile.json"
    argv = ["--models", "shiftadd_mbv2_tiny", "--variants", "plain", "mf-adder", "--batch", "2", "--size", "16",
            "--rounds", "1", "--warmup", "1", "--threads", "1", "--top", "5", "--json", str(out)]
    assert prof.main(argv) == 0
    assert (adder._forward, adder._input_grad, adder._weight_grad) == originals  # ranges removed afterwards
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"plain", "mf-adder"}
    for r in results.values():
        wall, cats = r["wall_ms_per_step"], r["categories_ms"]
        assert wall > 0 and all(v >= 0 for v in cats.values())
        assert sum(cats.values()) >= 0.98 * wall  # every millisecond of the step is booked somewhere
        assert len(r["top_ops_ms"]) <= 5
    plain, mf = results["plain"], results["mf-adder"]
    assert not plain["adder_by_shape_ms"] and "adder forward" not in plain["categories_ms"]
    assert plain["categories_ms"]["conv"] > 0
    shapes = mf["adder_by_shape_ms"]
    assert shapes and all(set(t) == {"forward", "input_grad", "weight_grad"} for t in shapes.values())
    assert any(s.startswith("dw ") for s in shapes) and any(s.startswith("pw ") for s in shapes)
    booked = sum(sum(t.values()) for t in shapes.values())
    adder_cats = sum(mf["categories_ms"].get(k, 0.0) for k in ("adder forward", "adder dX", "adder dW"))
    assert booked == pytest.approx(adder_cats, rel=1e-6)
