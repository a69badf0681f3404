"""ONNX export of MMSegmentation segmentors (shiftaddaug_plugin.deploy.segmentor_onnx, tools/export_mmseg.py --onnx):
ONNX Runtime parity with the PyTorch deploy model, equality with mmseg's own prediction, the audit, the tool."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import mmcv.ops  # noqa: F401
    import mmseg  # noqa: F401

    _MMSEG_ERROR = None
except Exception as err:  # noqa: BLE001 - any import failure means the stack is unusable
    _MMSEG_ERROR = f"{type(err).__name__}: {err}"

pytestmark = [
    pytest.mark.mmseg,
    pytest.mark.skipif(_MMSEG_ERROR is not None, reason=f"mmcv with compiled ops / mmseg unusable: {_MMSEG_ERROR}"),
]

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "mmseg"
FCN = CONFIGS / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"
DEEPLAB = CONFIGS / "shiftaddaug_mobilenet-v2-tiny_deeplabv3plus_1xb16-400it_fmnist-scenes-64x64.py"


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def _cfg(path: Path, op: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import shiftaddaug_plugin.mmseg_ext  # noqa: F401  (registrations)

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(path))
    cfg.model.convert_cfg.update(op=op)
    return cfg


def _hybrid(cfg):
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _deploy(cfg):
    """The deploy segmentor of a fresh hybrid model, BN statistics calibrated on random images (non-degenerate)."""
    import shiftaddaug_plugin.mmseg_ext as ext

    deploy = ext.build_deploy_model(cfg, ext.exported_checkpoint(_hybrid(cfg)))
    for bn in deploy.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    deploy.train()
    with torch.no_grad():
        for _ in range(2):
            deploy(torch.randn(8, 3, 64, 64), mode="tensor")
    return deploy.eval()


@pytest.mark.parametrize("config, op", [(FCN, "shift"), (FCN, "adder"), (DEEPLAB, "shift")])
def test_segmentor_onnx_matches_pytorch_and_mmseg_predict(config: Path, op: str, tmp_path: Path) -> None:
    from mmseg.structures import SegDataSample

    from shiftaddaug_plugin.deploy.onnx_export import layer_operators
    from shiftaddaug_plugin.deploy.segmentor_onnx import export_segmentor_onnx
    from shiftaddaug_plugin.deploy.verify import check_onnx, run_onnx

    deploy = _deploy(_cfg(config, op))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    path, net = export_segmentor_onnx(deploy, tmp_path / "seg.onnx", x[:1])  # batch 1 at export: dynamic batch
    check = check_onnx(net, path, x)  # raises on a hidden multiplication
    got = run_onnx(path, x)
    if op == "shift":
        assert check.max_relative_difference <= 1e-3, check.format()  # measured: 2.4e-5
        assert check.agreement >= 0.999
    else:  # as for classifiers: adder sums are ill-conditioned in float32; ORT must be as close to float64 as torch
        with torch.no_grad():
            ref = net(x).numpy()
            ref64 = net.double()(x.double()).numpy()
        net.float()
        err_ort, err_torch = np.abs(got - ref64).max(), np.abs(ref - ref64).max()
        assert err_ort <= 2 * err_torch + 1e-6 * np.abs(ref64).max()
        agree_ort, agree_torch = ((a.argmax(1) == ref64.argmax(1)).mean() for a in (got, ref))
        assert agree_ort >= agree_torch - 0.01  # labels vs float64: measured 99.5 % (ORT), 99.7 % (torch float32)
    # the exported network is mmseg's whole-image inference: its argmax is predict()'s label map
    samples = [SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
               for _ in range(len(x))]
    with torch.no_grad():
        labels = torch.stack([s.pred_sem_seg.data[0] for s in deploy.predict(x, samples)])
    assert torch.equal(labels, net(x).argmax(1))
    assert got.shape == (3, 11, 64, 64) and (got.argmax(1) == labels.numpy()).mean() >= check.agreement - 1e-9
    mults = [name for name, _, _ in check.audit.of_kind("mult")]
    assert mults == ["/backbone/conv1/conv/Conv"] and check.report.multiplicative_layers == ["backbone.conv1.conv"]
    assert check.audit.counts()["resize"] == (1 if config == FCN else 3)  # the head's bilinear upsampling
    n_adders = sum(1 for o in layer_operators(net).values() if o in ("adder", "shiftadd"))
    assert check.audit.functions.get("shiftaddaug.AdderConv2d", 0) == n_adders and (n_adders > 40) == (op != "shift")
    import onnx

    meta = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert meta["shiftaddaug.source"]["task"] == "semantic segmentation"
    assert len(meta["shiftaddaug.source"]["mean"]) == 3 and meta["shiftaddaug.cost"]["mults"] > 0


def test_hybrid_segmentor_is_refused(tmp_path: Path) -> None:
    from shiftaddaug_plugin.deploy.segmentor_onnx import export_segmentor_onnx

    with pytest.raises(ValueError, match="build it with model.deploy=True and load the exported checkpoint"):
        export_segmentor_onnx(_hybrid(_cfg(FCN, "shift")), tmp_path / "seg.onnx", torch.randn(1, 3, 64, 64))
    assert not (tmp_path / "seg.onnx").exists()


def _export_tool():
    spec = importlib.util.spec_from_file_location("_tool_export_mmseg", REPO / "tools" / "export_mmseg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_tool_writes_checks_and_audits_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hybrid = _hybrid(_cfg(FCN, "shift"))
    training = tmp_path / "iter_4.pth"
    torch.save({"meta": {"iter": 4}, "state_dict": hybrid.state_dict()}, training)
    tool = _export_tool()
    assert tool.main([str(FCN), str(training), "--recalib-images", "0", "--onnx", str(tmp_path / "a.onnx")]) == 0
    out = capsys.readouterr().out
    assert "exported MF target" in out and "per-pixel label agreement 100%" in out, out
    assert "mult  Conv       /backbone/conv1/conv/Conv" in out and "no hidden multiplication" in out
    # an already exported checkpoint goes straight to the counts and the ONNX file; same graph, same bytes
    exported = tmp_path / "iter_4_mf_target.pth"
    assert tool.main([str(FCN), str(exported), "--onnx", str(tmp_path / "b.onnx")]) == 0
    assert "exported MF target" not in capsys.readouterr().out
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    got = np.asarray(_run(tmp_path / "b.onnx"))
    assert got.shape == (2, 11, 64, 64)


def _run(path: Path):
    from shiftaddaug_plugin.deploy.verify import run_onnx

    return run_onnx(path, torch.zeros(2, 3, 64, 64))
