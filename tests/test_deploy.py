"""ONNX deployment of the exported MF target (shiftaddaug_plugin.deploy): ONNX Runtime parity with PyTorch, the
audit of multiplication-capable nodes, metadata, the CLI and its errors."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from torch import nn

from shiftaddaug_plugin import register_timm_models
from shiftaddaug_plugin.cost import count_ops
from shiftaddaug_plugin.deploy.cli import main as export_main
from shiftaddaug_plugin.deploy.onnx_audit import audit_onnx, is_power_of_two_tensor
from shiftaddaug_plugin.deploy.onnx_export import export_onnx, layer_operators
from shiftaddaug_plugin.train.checkpoint import save_exported

register_timm_models()


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def _target(model: str, op: str, width: float = 0.5) -> nn.Module:
    """An exported MF target with calibrated (non-degenerate) BN statistics."""
    torch.manual_seed(0)
    net = timm.create_model(model, op=op, num_classes=10, in_chans=1, width_mult=width)
    for bn in net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: the statistics of exactly these batches
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 1, 32, 32))
    return net.eval()


def _run(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("model", ["shiftadd_mcunet", "shiftadd_mbv2_tiny"])
@pytest.mark.parametrize("op", ["shift", "adder", "shiftadd"])
def test_onnx_runtime_matches_pytorch_and_hides_no_multiplication(model: str, op: str, tmp_path) -> None:
    net = _target(model, op)
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    path = export_onnx(net, tmp_path / "m.onnx", x[:2])  # batch 2 at export, 5 at run time: dynamic batch
    got = _run(path, x)
    with torch.no_grad():
        ref = net(x).numpy()
        ref64 = net.double()(x.double()).numpy()
    net.float()
    assert np.abs(ref).max() > 0
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    if op == "shift":
        # a 1-ulp difference of two float32 convolutions can move a value across a 2^-16 fixed-point step of the
        # next shift layer's input quantiser (floor): bounded, and never changes the prediction here
        assert rel <= 1e-3 and (got.argmax(1) == ref.argmax(1)).all()  # measured: 1e-4 (MCUNet), 2.7e-4 (MBV2)
    else:
        # adder sums are large (~ -fan_in) and the batch norm after them cancels most of it, so float32 itself is
        # far from float64 on these untrained nets; ONNX Runtime must be as accurate as PyTorch's float32
        err_ort, err_torch = np.abs(got - ref64).max(), np.abs(ref - ref64).max()
        assert err_ort <= 2 * err_torch + 1e-6 * np.abs(ref64).max()
    report = count_ops(net, (1, 32, 32))
    audit = audit_onnx(path, allowed=report.multiplicative_layers)  # raises on a hidden multiplication
    mults = audit.of_kind("mult")
    assert [name for name, _, _ in mults] == ["/conv_stem/Conv"] and report.multiplicative_layers == ["conv_stem"]
    assert audit.counts()["shift"] >= (3 if op == "adder" else 30)  # adder nets: the shift classifier + SE convs
    adders = [n for n, o in layer_operators(net).items() if o in ("adder", "shiftadd")]
    assert audit.functions.get("shiftaddaug.AdderConv2d", 0) == len(adders) and bool(adders) == (op != "shift")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    calls = [n for n in proto.graph.node if n.domain == "shiftaddaug"]
    assert {(f.domain, f.name, f.overload) for f in proto.functions} == {(n.domain, n.op_type, n.overload)
                                                                          for n in calls}
    assert all({a.name for a in n.attribute} == {"kernel_shape", "strides", "pads", "dilations", "group"}
               for n in calls)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["shiftaddaug.layers"] == layer_operators(net)
    assert meta["shiftaddaug.cost"]["mults"] == report.totals()["mults"]
    assert set(meta["shiftaddaug.quantisation"]) == {n for n, o in layer_operators(net).items()
                                                      if o in ("shift", "shiftadd")}
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    for name, q in meta["shiftaddaug.quantisation"].items():  # signs and exponents readable from the initializer
        w = weights[q["weight_initializer"]]
        exponents = np.log2(np.abs(w[w != 0]))
        assert is_power_of_two_tensor(w) and w.size == net.get_submodule(name).weight.numel()
        assert q["exponent_range"][0] <= exponents.min() and exponents.max() <= q["exponent_range"][1]


def test_audit_finds_a_hidden_multiplication(tmp_path) -> None:
    net = _target("shiftadd_mcunet", "shift")
    shift = net.blocks[1][0].conv_pw
    plain = nn.Conv2d(shift.in_channels, shift.out_channels, 1, bias=shift.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(shift.weight)
    net.blocks[1][0].conv_pw = plain  # a multiplicative conv where the MF network promised a shift
    path = export_onnx(net, tmp_path / "m.onnx", torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"hidden multiplication.*blocks\.1\.0/conv_pw"):
        audit_onnx(path, allowed=["conv_stem"])

    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 3.0 + x * 0.25  # 3.0: a multiplication; 0.25 = 2^-2: a shift

    torch.onnx.export(Scale(), (torch.randn(1, 4),), str(tmp_path / "s.onnx"), dynamo=False)
    kinds = sorted(kind for _, _, kind in audit_onnx(tmp_path / "s.onnx").nodes)
    assert kinds == ["mult", "shift"]


def test_audit_finds_a_multiplication_hidden_in_an_adder_function(tmp_path) -> None:
    from onnx import helper

    from shiftaddaug_plugin.layers import AdderConv2d

    net = nn.Sequential(AdderConv2d(4, 6, 3, padding=1), nn.ReLU(), AdderConv2d(6, 6, 1))
    path = export_onnx(net, tmp_path / "m.onnx", torch.randn(1, 4, 8, 8))
    assert audit_onnx(path, allowed=[]).functions == {"shiftaddaug.AdderConv2d": 2}
    proto = onnx.load(str(path))
    body = next(f for f in proto.functions if f.overload.startswith("k1x1"))
    y = body.output[0]
    body.node[-1].output[0] = "y_before"  # Y = 3 * (what the body computed): a multiplication inside the function
    body.node.extend([helper.make_node("Constant", [], ["three"], value=helper.make_tensor("t", 1, [], [3.0])),
                      helper.make_node("Mul", ["y_before", "three"], [y], name="Mul_hidden")])
    with pytest.raises(ValueError, match=r"hidden multiplication.*/2/AdderConv2d/Mul_hidden"):
        audit_onnx(proto, allowed=[])


@pytest.mark.parametrize("shape", [(4, 6, 3, 1, 1, 1), (8, 8, 3, 2, 1, 8), (8, 8, 5, 1, 2, 8), (6, 4, 1, 1, 0, 1),
                                   (6, 4, 1, 2, 0, 1), (6, 6, 3, 1, 2, 2)])
def test_single_mf_layers_match_in_onnx_runtime(shape: tuple[int, ...], tmp_path) -> None:
    """Layer by layer the twins are exact up to float32 summation order (<= 1e-5 relative)."""
    from shiftaddaug_plugin.layers import AdderConv2d, ShiftAddConv2d, ShiftConv2d

    cin, cout, k, s, p, g = shape
    torch.manual_seed(0)
    x = torch.randn(3, cin, 9, 9)
    layers = [AdderConv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=True),
              ShiftConv2d(cin, cout, k, stride=s, padding=p, groups=g, quantize_input=False)]
    if s == 1 and k % 2 == 1 and g in (1, cin) and cin == cout:
        layers.append(ShiftAddConv2d(cin, cout, k, padding=p, groups=g, quantize_input=False))
    for layer in layers:
        path = export_onnx(nn.Sequential(layer), tmp_path / "l.onnx", x)
        with torch.no_grad():
            ref = layer(x).numpy()
        got = _run(path, x)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), type(layer).__name__


def test_power_of_two_detector() -> None:
    assert is_power_of_two_tensor(np.array([0.0, 1.0, -0.5, 2.0 ** -15, -4.0]))
    assert not is_power_of_two_tensor(np.array([0.5, 0.75]))
    assert not is_power_of_two_tensor(np.array([3.0]))


def test_export_refuses_a_hybrid_training_model(tmp_path) -> None:
    hybrid = timm.create_model("shiftadd_mcunet", op="shift", aug=True, num_classes=10, in_chans=1, width_mult=0.25)
    with pytest.raises(ValueError, match="export the multiplication-free target first"):
        export_onnx(hybrid, tmp_path / "m.onnx", torch.randn(1, 1, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_an_mf_layer_without_a_twin_and_keeps_shared_layers_shared(tmp_path) -> None:
    from shiftaddaug_plugin.deploy.onnx_export import onnx_ready
    from shiftaddaug_plugin.layers import AdderConv2d, ShiftConv2d

    class MyAdder(AdderConv2d):
        pass

    with pytest.raises(ValueError, match=r"layer 'body.1' is a MyAdder, a subclass of AdderConv2d with no ONNX twin"):
        export_onnx(nn.Sequential(OrderedDict(body=nn.Sequential(nn.ReLU(), MyAdder(2, 2, 1)))), tmp_path / "m.onnx",
                    torch.randn(1, 2, 4, 4))
    assert not (tmp_path / "m.onnx").exists()
    shared = ShiftConv2d(3, 3, 3, padding=1)
    ready = onnx_ready(nn.Sequential(shared, nn.ReLU(), shared))
    assert ready[0] is ready[2] and type(ready[0]).__name__ == "OnnxShiftConv2d"


def test_a_trained_run_exports_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the README shows after `make demo`: shiftaddaug-train's exported_target.pth -> shiftaddaug-export."""
    from shiftaddaug_plugin.train.cli import main as train_main

    argv = ["--model", "shiftadd_mcunet", "--model-kwargs", "op=adder", "width_mult=0.25", "--dataset",
            "fashion_mnist", "--train-subset", "32", "--val-subset", "16", "-b", "16", "--epochs", "1",
            "--aug-width-mult-list", "1.0", "1.5", "--workers", "0", "--output", str(tmp_path), "--experiment", "run"]
    assert train_main(argv) == 0
    capsys.readouterr()
    exported = tmp_path / "run" / "exported_target.pth"
    assert export_main([str(exported), "--onnx", str(tmp_path / "run.onnx"), "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement" in out and "custom op shiftaddaug.AdderConv2d: " in out, out
    assert "mult  Conv       /conv_stem/Conv" in out and "no hidden multiplication" in out


def test_cli_exports_checks_and_audits(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _target("shiftadd_mcunet", "shift", width=0.25)
    meta = {"rebuild": "entrypoint", "model": "shiftadd_mcunet", "num_classes": 10, "input_size": [1, 32, 32],
            "model_kwargs": {"op": "shift", "width_mult": 0.25}, "mean": [0.5], "std": [0.5]}
    weights, _ = save_exported(tmp_path, net, meta)
    assert export_main([str(weights), "--onnx", str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement 100%" in out and "mult  Conv       /conv_stem/Conv" in out
    assert "no hidden multiplication" in out
    assert export_main([str(weights), "--onnx", str(tmp_path / "x.onnx"), "--opset", "9"]) == 2
    assert "opset=9: the adder patch extraction needs ONNX opset >= 11" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing.pth"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "shiftaddaug-export: error:" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
