"""Our operators in mmengine's root ``MODELS`` registry (docs/ARCHITECTURE.md: ``conv_cfg=dict(type='ShiftConv2d')``).

The first tests need only mmengine. Those marked ``mmseg`` build mmseg's MobileNetV2 through mmcv's
``build_conv_layer``; they skip only when ``import mmcv.ops`` fails (mmcv without compiled ops, or not built yet).
"""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

mmengine_registry = pytest.importorskip("mmengine.registry", reason="mmengine is not installed")
MODELS = mmengine_registry.MODELS

from shiftaddaug_plugin.registry import MMENGINE_OPS, register_mmengine_modules  # noqa: E402


def _our_class(name: str) -> type:
    module_path, cls_name = MMENGINE_OPS[name]
    return getattr(importlib.import_module(module_path), cls_name)


def _require_mmcv_ops() -> None:
    try:
        import mmcv.ops  # noqa: F401  (compiled ops: the marker of a usable mmcv build)
    except ImportError as err:
        pytest.skip(f"mmcv with compiled ops is not importable ({type(err).__name__}: {err}); "
                    "build it with tools/build_mmcv.sh")


# ------------------------------------------------------------------------------------------------ mmengine only


def test_register_is_idempotent_and_builds_shift_layers():
    register_mmengine_modules()
    register_mmengine_modules()
    for name in MMENGINE_OPS:
        assert MODELS.get(name) is _our_class(name)
    conv = MODELS.build(dict(type="ShiftConv2d", in_channels=3, out_channels=4, kernel_size=3, padding=1,
                             weight_bits=4, act_frac_bits=8))
    from shiftaddaug_plugin.layers.shift import ShiftConv2d, ShiftLinear

    assert type(conv) is ShiftConv2d and conv.quant_config.weight_bits == 4 and conv.quant_config.act_frac_bits == 8
    assert conv(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5)
    lin = MODELS.build(dict(type="ShiftLinear", in_features=6, out_features=2, bias=False))
    assert type(lin) is ShiftLinear and lin.bias is None


def test_register_refuses_to_overwrite_a_foreign_module(monkeypatch):
    class Impostor(nn.Module):
        pass

    monkeypatch.setitem(MODELS.module_dict, "ShiftConv2d", Impostor)
    with pytest.raises(RuntimeError, match="ShiftConv2d"):
        register_mmengine_modules()


def test_names_do_not_collide_with_mmcv_or_mmengine():
    """Our names are unique; mmcv's own entries ('Conv2d', 'Conv', ...) keep pointing to mmcv's choices."""
    try:
        import mmcv.cnn  # noqa: F401  (registers mmcv's conv/linear layers in the same root registry)
        mmcv_loaded = True
    except ImportError:
        mmcv_loaded = False
    register_mmengine_modules()
    for name in MMENGINE_OPS:
        assert MODELS.get(name) is _our_class(name), name
        assert name not in ("Conv", "Conv1d", "Conv2d", "Conv3d", "Linear", "deconv", "ConvWS", "ConvAWS")
    if mmcv_loaded:
        assert MODELS.get("Conv2d") is nn.Conv2d
        assert MODELS.get("Conv") is not None and MODELS.get("Conv") not in {_our_class(n) for n in MMENGINE_OPS}


# ----------------------------------------------------------------------------------------------- with mmcv / mmseg


@pytest.mark.mmseg
def test_build_conv_layer_passes_conv_arguments():
    _require_mmcv_ops()
    from mmcv.cnn import ConvModule, build_conv_layer

    from shiftaddaug_plugin.layers.shift import ShiftConv2d

    register_mmengine_modules()
    conv = build_conv_layer(dict(type="ShiftConv2d", weight_bits=3), 4, 8, 3, stride=2, padding=1, dilation=1,
                            groups=2, bias=False)
    assert type(conv) is ShiftConv2d and conv.groups == 2 and conv.stride == (2, 2) and conv.bias is None
    assert conv.quant_config.weight_bits == 3
    block = ConvModule(4, 8, 3, padding=1, conv_cfg=dict(type="ShiftConv2d"), norm_cfg=dict(type="BN"))
    assert type(block.conv) is ShiftConv2d
    assert block(torch.randn(2, 4, 6, 6)).shape == (2, 8, 6, 6)


@pytest.mark.mmseg
@pytest.mark.parametrize("conv_type", ["ShiftConv2d", "AdderConv2d", "ShiftAddConv2d"])
def test_mmseg_mobilenetv2_with_mf_convs_trains(conv_type, monkeypatch):
    _require_mmcv_ops()
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")  # 51 adder shapes: no per-shape compilation here
    import mmseg.models  # noqa: F401  (registers the backbones)
    from mmseg.registry import MODELS as SEG_MODELS

    register_mmengine_modules()
    cls = _our_class(conv_type)
    torch.manual_seed(0)
    backbone = SEG_MODELS.build(dict(type="MobileNetV2", widen_factor=0.25, out_indices=(1, 3, 6),
                                     conv_cfg=dict(type=conv_type)))
    from mmcv.cnn import ConvModule

    convs = [m.conv for m in backbone.modules() if isinstance(m, ConvModule)]  # stem + 2 + 16 x 3
    assert len(convs) == 51 and all(type(m) is cls for m in convs), {type(m).__name__ for m in convs}
    backbone.train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    outs = backbone(x)
    assert [o.shape[1] for o in outs] == [8, 16, 80]  # widen_factor 0.25 of (24, 64, 320), divisor 8
    loss = sum(o.square().mean() for o in outs)
    loss.backward()
    assert torch.isfinite(loss)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for m in convs:
        assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all(), m
    assert sum(float(m.weight.grad.abs().sum()) > 0 for m in convs) == len(convs)

