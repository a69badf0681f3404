"""Tests of the cost model (docs/algorithms.md §8): exact counts on hand-computable layers, hybrid eq. 4 accounting,
exported MF models, cross-checks against torch's FlopCounterMode and mmengine's FlopAnalyzer, reports, plot, CLI."""
from __future__ import annotations

import csv
import importlib
import io
import json
import math
import warnings

import pytest
import torch
from torch import nn

from shiftaddaug_plugin.cost import (
    DEFAULT_ENERGY_TABLE,
    CostModelWarning,
    EnergyTable,
    count_ops,
    format_report,
    register_cost_rule,
)
from shiftaddaug_plugin.cost.rules import LayerEstimate, OpCounts
from shiftaddaug_plugin.modes import Mode, set_mode

# ------------------------------------------------------------------------------------------------ helpers


def _only(report, op_prefix: str | None = None):
    rows = [r for r in report.layers if op_prefix is None or r.op.startswith(op_prefix)]
    assert len(rows) == 1, [r.op for r in report.layers]
    return rows[0]


def _naive_conv_macs(n, c_in, c_out, groups, k, h_out, w_out) -> int:
    """Count MACs by enumerating every (output element, kernel tap) pair."""
    total = 0
    for _ in range(n):
        for _o in range(c_out):
            for _y in range(h_out):
                for _x in range(w_out):
                    total += (c_in // groups) * k * k
    return total


def _layers(name: str):
    return importlib.import_module(f"shiftaddaug_plugin.layers.{name}")


# ------------------------------------------------------------------------------------------------ energy table


def test_energy_table_defaults_match_design():
    t = DEFAULT_ENERGY_TABLE
    assert (t.column("fp32").mult, t.column("fp32").add, t.column("fp32").shift) == (3.7, 0.9, 0.13)
    assert (t.column("int32").mult, t.column("int32").add, t.column("int32").shift) == (3.1, 0.1, 0.13)
    assert (t.column("INT8").mult, t.column("int8").add, t.column("int8").shift) == (0.2, 0.03, 0.024)
    assert t.energy_pj(10, 100, 1000, "int8") == pytest.approx(10 * 0.2 + 100 * 0.03 + 1000 * 0.024)


def test_energy_table_override_and_errors():
    t = DEFAULT_ENERGY_TABLE.override({"int8": {"mult": 0.25}, "int4": {"mult": 0.1, "add": 0.01, "shift": 0.01}})
    assert t.column("int8").mult == 0.25 and t.column("int8").add == 0.03
    assert t.column("int4").add == 0.01
    assert DEFAULT_ENERGY_TABLE.column("int8").mult == 0.2  # original untouched
    with pytest.raises(ValueError, match="unknown precision"):
        t.column("fp16")
    with pytest.raises(ValueError, match="unknown operation"):
        DEFAULT_ENERGY_TABLE.override({"fp32": {"mul": 1.0}})
    with pytest.raises(ValueError, match="needs values"):
        DEFAULT_ENERGY_TABLE.override({"fp16": {"mult": 1.0}})
    with pytest.raises(ValueError, match="finite number"):
        DEFAULT_ENERGY_TABLE.override({"fp32": {"add": -1.0}})
    assert EnergyTable.from_dict(t.to_dict()).to_dict() == t.to_dict()


# ------------------------------------------------------------------------------------------------ plain layers


def test_conv_exact_counts_and_energy():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    r = count_ops(conv, (3, 5, 5))
    row = _only(r)
    macs = _naive_conv_macs(1, 3, 8, 1, 3, 5, 5)
    assert macs == 5400
    assert (row.mults, row.adds, row.shifts, row.macs) == (macs, macs + 8 * 25, 0, macs)
    assert row.params == 8 * 3 * 9 + 8 and row.weight_bits == [32]
    assert row.energy_pj == pytest.approx(macs * 3.7 + (macs + 200) * 0.9)
    r8 = count_ops(conv, (3, 5, 5), precision="int8")
    assert r8.energy_pj == pytest.approx(macs * 0.2 + (macs + 200) * 0.03)
    assert r8.layers[0].param_bits == row.params * 8


def test_depthwise_strided_conv_and_batch():
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
    r = count_ops(conv, (2, 4, 6, 6))
    row = _only(r, "depthwise conv")
    macs = _naive_conv_macs(2, 4, 4, 4, 3, 3, 3)
    assert (row.mults, row.adds, row.macs) == (macs, macs, macs) and macs == 648
    assert row.output_shape == [2, 4, 3, 3]


def test_linear_on_3d_input():
    lin = nn.Linear(10, 7)
    r = count_ops(lin, inputs=torch.randn(2, 3, 10))
    row = _only(r)
    assert (row.mults, row.adds) == (6 * 70, 6 * 70 + 6 * 7)
    assert row.params == 77


def test_batchnorm_folded_and_unfolded():
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3))
    folded = count_ops(model, (2, 4, 4)).layer("1")
    unfolded = count_ops(model, (2, 4, 4), bn="unfolded").layer("1")
    assert (folded.mults, folded.adds) == (0, 0) and "folded" in folded.note
    assert (unfolded.mults, unfolded.adds) == (48, 48)
    assert folded.params == 6
    with pytest.raises(ValueError, match="bn must be"):
        count_ops(model, (2, 4, 4), bn="fused")


def test_pooling_and_activation_conventions():
    cases = [
        (nn.MaxPool2d(2), (3, 4, 4), dict(adds=3 * 4 * 3, mults=0, shifts=0)),  # 12 outputs x 3 comparisons
        (nn.AvgPool2d(3), (2, 6, 6), dict(adds=2 * 4 * 8, mults=2 * 4, shifts=0)),  # k=9: scale is a mult
        (nn.AvgPool2d(2), (2, 4, 4), dict(adds=2 * 4 * 3, mults=0, shifts=2 * 4)),  # k=4: scale is a shift
        (nn.AdaptiveAvgPool2d(1), (5, 4, 4), dict(adds=5 * 15, mults=0, shifts=5)),
        # 5 -> 2 bins: [0, 3) and [2, 5) -> 3x3 windows
        (nn.AdaptiveAvgPool2d(2), (1, 5, 5), dict(adds=4 * 8, mults=4, shifts=0)),
        (nn.AdaptiveMaxPool2d((1, 2)), (1, 3, 4), dict(adds=2 * 5, mults=0, shifts=0)),
        (nn.ReLU6(), (2, 3, 3), dict(adds=0, mults=0, shifts=0)),
        (nn.SiLU(), (2, 3, 3), dict(adds=0, mults=0, shifts=0)),
        (nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 2), dict(adds=3 * 16, mults=4 * 16, shifts=0)),
    ]
    for module, shape, expected in cases:
        row = _only(count_ops(module, shape))
        assert {k: getattr(row, k) for k in expected} == expected, type(module).__name__


def test_runtime_norm():
    row = _only(count_ops(nn.GroupNorm(2, 4), (4, 2, 2)))
    assert (row.mults, row.adds) == (3 * 16, 4 * 16)
    row = _only(count_ops(nn.LayerNorm(6, elementwise_affine=False), inputs=torch.randn(2, 6)))
    assert (row.mults, row.adds) == (2 * 12, 3 * 12)


def test_identity_dropout_flatten_have_no_rows():
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8, 2))
    r = count_ops(model, (2, 2, 2))
    assert [row.name for row in r.layers] == ["3"]
    assert not r.uncounted


def test_unknown_modules_are_listed_not_silently_zero():
    class Scale(nn.Module):  # leaf with a parameter, no rule
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.s

    class Square(nn.Module):  # parameterless leaf, no rule
        def forward(self, x):
            return x * x

    model = nn.Sequential(nn.Conv2d(1, 2, 1), Scale(), Square())
    with pytest.warns(CostModelWarning, match="NOT counted"):
        r = count_ops(model, (1, 2, 2))
    assert r.uncounted == ["1", "2"]
    assert r.layer("1").op == "UNCOUNTED" and r.layer("1").params == 1
    assert "register_cost_rule" in format_report(r, "text") or "UNCOUNTED" in format_report(r, "text")

    def square_rule(module, x, y, ctx):
        return LayerEstimate(op="square", counts=OpCounts(mults=int(y.numel())))

    register_cost_rule(Square, square_rule)
    with pytest.warns(CostModelWarning):
        r = count_ops(model, (1, 2, 2))
    assert r.uncounted == ["1"] and r.layer("2").mults == 8


def test_shared_module_counted_per_call():
    conv = nn.Conv2d(2, 2, 1, bias=False)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(self.conv(x))

    row = _only(count_ops(Twice(), (2, 3, 3)))
    assert row.calls == 2 and row.mults == 2 * 2 * 2 * 9 and row.params == 4


def test_peak_activation_memory_and_restored_training_flags():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).train()
    r = count_ops(model, (1, 8, 8))
    # largest in+out of a non-in-place layer: conv0 (64 + 256) vs conv2 (256 + 128) elements, fp32
    assert r.peak_activation_bytes == (256 + 128) * 4 and r.peak_activation_layer == "2"
    assert count_ops(model, (1, 8, 8), precision="int8").peak_activation_bytes == 256 + 128
    assert all(m.training for m in model.modules())


def test_mmengine_style_forward_gets_tensor_mode():
    class Seg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, inputs, data_samples=None, mode="tensor"):
            if mode != "tensor":
                raise AssertionError("count_ops must call mode='tensor'")
            return self.conv(inputs)

    assert count_ops(Seg(), (3, 4, 4)).mults == 2 * 3 * 16


def test_input_errors():
    with pytest.raises(ValueError, match="exactly one"):
        count_ops(nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="sequence of ints"):
        count_ops(nn.Conv2d(1, 1, 1), "3x32x32")
    with pytest.raises(ValueError, match="unknown precision"):
        count_ops(nn.Conv2d(1, 1, 1), (1, 2, 2), precision="fp16")


# ------------------------------------------------------------------------------------------------ MF layers


def test_shift_layers_counts_and_bits():
    shift = _layers("shift")
    conv = shift.ShiftConv2d(3, 4, 3, padding=1, bias=True, weight_bits=4, act_int_bits=8, act_frac_bits=8)
    row = _only(count_ops(conv, (3, 4, 4)))
    macs = _naive_conv_macs(1, 3, 4, 1, 3, 4, 4)
    assert (row.mults, row.shifts, row.adds, row.macs) == (0, macs, macs + 4 * 16, macs)
    assert row.weight_bits == [4] and row.act_bits == 16 and row.mf_layer
    assert row.param_bits == 4 * 27 * 4 + 4 * 16
    assert row.energy_pj == pytest.approx(macs * 0.13 + (macs + 64) * 0.9)
    lin = shift.ShiftLinear(6, 3, bias=False)
    row = _only(count_ops(lin, inputs=torch.randn(2, 6)))
    assert (row.mults, row.shifts, row.adds) == (0, 36, 36) and row.act_bits == 32 and row.weight_bits == [5]


def test_adder_conv_counts():
    adder = _layers("adder")
    conv = adder.AdderConv2d(2, 3, 3, padding=1, groups=1)
    row = _only(count_ops(conv, (2, 4, 4)))
    macs = _naive_conv_macs(1, 2, 3, 1, 3, 4, 4)
    assert (row.mults, row.shifts, row.adds, row.macs) == (0, 0, 2 * macs, macs)


def test_shiftadd_conv_counts_both_parts():
    shiftadd = _layers("shiftadd")
    layer = shiftadd.ShiftAddConv2d(2, 4, 3, stride=2, padding=1, bias=False)
    r = count_ops(layer, (2, 6, 6))
    shift_row, adder_row = r.layers
    shift_macs = _naive_conv_macs(1, 2, 4, 1, 3, 3, 3)
    adder_macs = _naive_conv_macs(1, 4, 4, 1, 3, 3, 3)
    assert (shift_row.shifts, shift_row.adds, shift_row.mults) == (shift_macs, shift_macs, 0)
    assert (adder_row.adds, adder_row.mults, adder_row.name) == (2 * adder_macs, 0, "adder")
    assert r.mults == 0


# ------------------------------------------------------------------------------------------------ hybrid layers


def _hybrid_dense(op="shift", bias=True, **kw):
    hybrid = _layers("hybrid")
    return hybrid.HybridConv2d(6, 8, 3, padding=1, bias=bias, target_in_channels=2, target_out_channels=3, op=op, **kw)


def test_hybrid_dense_target_and_augmented_eq4():
    layer = _hybrid_dense()
    hw = 16
    with set_mode(layer, Mode.TARGET):
        t = _only(count_ops(layer, (2, 4, 4)))
    t_macs = 3 * 2 * 9 * hw
    assert (t.mults, t.shifts, t.adds) == (0, t_macs, t_macs + 3 * hw)
    assert t.params == 3 * 2 * 9 + 3 and t.output_shape == [1, 3, 4, 4]
    layer.active_out_channels = 5
    a = _only(count_ops(layer, (4, 4, 4), mode="augmented"))
    assert layer.mode == Mode.AUGMENTED
    # Y_t = MF(X_t) + M(X_a): MF 3x2, mult 3x(4-2); Y_a = M(X): (5-3)x4; +1 merge add per target output
    mult_macs = (3 * 2 + 2 * 4) * 9 * hw
    assert a.shifts == t_macs and a.mults == mult_macs
    assert a.adds == t_macs + mult_macs + 3 * hw + 5 * hw  # accumulate + merge + bias
    assert a.macs == t_macs + mult_macs and a.params == (3 * 2 + 3 * 2 + 2 * 4) * 9 + 5


def test_hybrid_depthwise_and_disabled_mf():
    hybrid = _layers("hybrid")
    dw = hybrid.HybridConv2d(8, 8, 3, padding=1, groups=8, bias=False, target_in_channels=3, target_out_channels=3,
                             op="adder")
    a = _only(count_ops(dw, (5, 4, 4)))
    assert (a.adds, a.mults) == (2 * 3 * 9 * 16 + 2 * 9 * 16, 2 * 9 * 16)
    dw.mf_enabled = False
    off = _only(count_ops(dw, (3, 4, 4), mode=Mode.TARGET))
    assert (off.mults, off.adds, off.shifts) == (3 * 9 * 16, 3 * 9 * 16, 0) and not off.mf_layer


def test_hybrid_shiftadd_counts_adder_weight():
    layer = _hybrid_dense(op="shiftadd", bias=False)
    t = _only(count_ops(layer, (2, 4, 4), mode="target"))
    shift_macs, adder_macs = 3 * 2 * 9 * 16, 3 * 3 * 9 * 16
    assert (t.mults, t.shifts, t.adds) == (0, shift_macs, shift_macs + 2 * adder_macs)


def test_hybrid_linear_and_batchnorm():
    hybrid = _layers("hybrid")
    lin = hybrid.HybridLinear(10, 4, target_in_features=6)
    a = _only(count_ops(lin, inputs=torch.randn(3, 8)))
    assert (a.shifts, a.mults, a.adds) == (3 * 4 * 6, 3 * 4 * 2, 3 * 4 * 6 + 3 * 4 * 2 + 12 + 12)
    bn = hybrid.HybridBatchNorm2d(8, target_num_features=3)
    row = _only(count_ops(bn, (5, 2, 2), bn="unfolded"))
    assert (row.mults, row.adds, row.params) == (20, 20, 10)


def _tiny_hybrid_net():
    hybrid = _layers("hybrid")
    return nn.Sequential(
        hybrid.HybridConv2d(3, 12, 3, stride=2, padding=1, target_in_channels=3, target_out_channels=6, op="shift"),
        hybrid.HybridBatchNorm2d(12, target_num_features=6),
        nn.ReLU6(),
        hybrid.HybridConv2d(12, 12, 3, padding=1, groups=12, target_in_channels=6, target_out_channels=6, op="adder"),
        hybrid.HybridBatchNorm2d(12, target_num_features=6),
        nn.ReLU6(),
        hybrid.HybridConv2d(12, 8, 1, target_in_channels=6, target_out_channels=4, op="mult"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        hybrid.HybridLinear(8, 5, target_in_features=4),
    )


def _export(model: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*[m.export() if hasattr(m, "export") else m for m in model]).eval()


def test_target_mode_costs_like_exported_model_and_mf_layers_have_no_mults():
    model = _tiny_hybrid_net()
    with set_mode(model, Mode.TARGET):
        target = count_ops(model, (3, 8, 8))
    slim = _export(model)
    exported = count_ops(slim, (3, 8, 8))
    for attr in ("mults", "adds", "shifts", "macs", "params"):
        assert getattr(target, attr) == getattr(exported, attr), attr
    # MF layers: 0 multiplications; the layer kept multiplicative (op='mult') is named
    mf_rows = [r for r in exported.layers if r.mf_layer]
    assert {r.type for r in mf_rows} == {"ShiftConv2d", "AdderConv2d", "ShiftLinear"}
    assert all(r.mults == 0 for r in mf_rows)
    assert exported.multiplicative_layers == ["6"]  # the 1x1 'mult' conv; pooling over 4x4 uses a shift
    assert "6" in format_report(exported, "text", per_layer=False)
    # augmented mode adds multiplicative channels; the MF (target) part is unchanged (eq. 4)
    augmented = count_ops(model, (3, 8, 8), mode="augmented")
    assert augmented.mults > target.mults
    mf_shifts = [sum(r.shifts for r in rep.layers if r.mf_layer) for rep in (augmented, target)]
    assert mf_shifts[0] == mf_shifts[1] > 0


# ------------------------------------------------------------------------------------------------ cross-checks


@pytest.mark.parametrize("name,size", [("mobilenetv2_050", 64), ("test_efficientnet", 64)])
def test_macs_agree_with_established_counters(name, size):
    timm = pytest.importorskip("timm")
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(name).eval()
    report = count_ops(model, (3, size, size))
    assert not report.uncounted
    x = torch.randn(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    torch_macs = counter.get_total_flops() / 2
    assert abs(report.macs - torch_macs) <= 0.01 * torch_macs
    from mmengine.analysis import FlopAnalyzer

    analyzer = FlopAnalyzer(model, (x,))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_op = analyzer.by_operator()
    mm_macs = sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "matmul"))
    assert abs(report.macs - mm_macs) <= 0.01 * mm_macs
    assert report.params == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ reports / plot / CLI


def _small_report():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    return count_ops(model, (3, 4, 4))


def test_report_formats_roundtrip():
    r = _small_report()
    rows = list(csv.DictReader(io.StringIO(format_report(r, "csv"))))
    assert [row["name"] for row in rows] == [layer.name for layer in r.layers] + ["TOTAL"]
    assert int(rows[-1]["mults"]) == r.mults and float(rows[-1]["energy_pj"]) == pytest.approx(r.energy_pj)
    data = json.loads(format_report(r, "json"))
    assert data["totals"]["adds"] == r.adds and len(data["layers"]) == len(r.layers)
    assert "layers" not in json.loads(format_report(r, "json", per_layer=False))
    md = format_report(r, "markdown")
    assert md.startswith("| layer | op |") and "**TOTAL**" in md
    text = format_report(r, "text")
    assert "TOTAL" in text and "energy (fp32)" in text
    with pytest.raises(ValueError, match="unknown report format"):
        format_report(r, "xml")


def test_pareto_front_and_png(tmp_path):
    from shiftaddaug_plugin.cost import pareto_front, plot_pareto

    runs = [
        {"name": "a", "accuracy": 70.0, "energy": 10.0, "group": "mult"},
        {"name": "b", "accuracy": 72.0, "energy": 20.0, "group": "mult"},
        {"name": "c", "accuracy": 71.0, "energy": 25.0, "group": "mult"},  # dominated by b
        {"name": "d", "accuracy": 73.5, "energy": 8.0, "group": "ShiftAddAug"},  # dominates a
        {"name": "e", "accuracy": 75.0, "energy": 30.0, "group": "ShiftAddAug"},
    ]
    assert [r["name"] for r in pareto_front(runs)] == ["d", "e"]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    out = tmp_path / "pareto.png"
    front = plot_pareto(str(path), out, log_energy=True)
    assert [r["name"] for r in front] == ["d", "e"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks"):
        pareto_front([{"name": "x", "accuracy": 1.0}])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([{"name": "x", "accuracy": math.nan, "energy": 1.0}])


def test_cli_model_report_checkpoint_and_pareto(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from shiftaddaug_plugin.cost.cli import main

    out = tmp_path / "r.json"
    assert main(["--model", "test_efficientnet", "--model-kwargs", "num_classes=10", "--input-size", "3", "32", "32",
                 "--format", "json", "--per-layer", "--precision", "int8", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    model = timm.create_model("test_efficientnet", num_classes=10)
    ref = count_ops(model, (3, 32, 32), precision="int8")
    assert data["totals"]["mults"] == ref.mults and data["totals"]["energy_pj"] == pytest.approx(ref.energy_pj)
    assert data["layers"][-1]["output_shape"] == [1, 10]

    ckpt = tmp_path / "sd.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    assert main(["--model", "test_efficientnet", "--model-kwargs", "num_classes=10", "--checkpoint", str(ckpt),
                 "--input-size", "3", "32", "32", "--format", "md"]) == 0
    assert "| multiplications |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # checkpoint of a different head -> argparse error naming the mismatch
        main(["--model", "test_efficientnet", "--checkpoint", str(ckpt), "--input-size", "3", "32", "32"])
    assert "does not match" in capsys.readouterr().err

    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([{"name": "a", "accuracy": 1, "energy": 2}, {"name": "b", "accuracy": 2, "energy": 1}]))
    png = tmp_path / "p.png"
    assert main(["--pareto", str(runs), "--plot", str(png)]) == 0
    assert png.exists() and "Pareto front: b" in capsys.readouterr().out


def test_no_warning_on_timm_model():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_efficientnet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CostModelWarning)
        r = count_ops(model, (3, 32, 32))
    assert any(row.op == "residual add" for row in r.layers) or all(
        not getattr(m, "has_skip", False) for m in model.modules())
    assert any(row.op.startswith("squeeze-excite") for row in r.layers)


@pytest.mark.mmseg
def test_mmseg_encoder_decoder_counts_through_tensor_mode():
    pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
    pytest.importorskip("mmseg")
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    from torch.utils.flop_counter import FlopCounterMode

    register_all_modules()
    norm = dict(type="BN", requires_grad=True)
    model = MODELS.build(dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", size=(32, 32)),
        backbone=dict(type="ResNet", depth=18, num_stages=4, out_indices=(3,), norm_cfg=norm),
        decode_head=dict(type="FCNHead", in_channels=512, in_index=0, channels=16, num_convs=1, concat_input=False,
                         num_classes=3, norm_cfg=norm, loss_decode=dict(type="CrossEntropyLoss")),
    )).eval()
    report = count_ops(model, (3, 32, 32))
    assert not report.uncounted
    assert sum(row.op == "residual add" for row in report.layers) == 8  # ResNet-18: 8 basic blocks
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32), mode="tensor")
    torch_macs = counter.get_total_flops() / 2
    assert abs(report.macs - torch_macs) <= 0.01 * torch_macs


@pytest.mark.parametrize("shape, message", [
    ((1, 0, 0), "input_shape must be positive ints"),
    ((3, 8, 8), r"does not run on an input of shape \(1, 3, 8, 8\).*in_chans"),  # the net takes 1 channel
    ((1, 2, 2), r"does not run on an input of shape \(1, 1, 2, 2\).*large enough"),  # 2 px < the 3x3 kernel
])
def test_impossible_input_sizes_are_clear_errors(shape: tuple[int, ...], message: str) -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=message):
        count_ops(net, shape)
