"""ShiftAddNet composite ``ShiftAddConv2d``: shift conv, then an out→out adder conv (stride 1, 'same' padding).

The adder part is checked against an independent naive float64 loop of ``-Σ|x - w|`` (docs/algorithms.md §2); the shift
part is verified in ``test_shift.py`` and reused here through ``ShiftConv2d`` with the same weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shiftaddaug_plugin.layers.adder import AdderConv2d
from shiftaddaug_plugin.layers.shift import ShiftConv2d
from shiftaddaug_plugin.layers.shiftadd import ShiftAddConv2d, adder_same_padding


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch):
    """Keep per-shape compilation out of these small tests: the adder's eager backend (same maths)."""
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def np_adder_conv2d(x: np.ndarray, w: np.ndarray, padding, dilation, groups) -> np.ndarray:
    """Naive float64 AdderNet conv, stride 1: y = -Σ_{c,tap} |x_pad - w| (padding counts as x = 0)."""
    n, _, _, _ = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = padding
    dh, dw = dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = xp.shape[2] - dh * (kh - 1), xp.shape[3] - dw * (kw - 1)
    og = o // groups
    y = np.zeros((n, o, ho, wo))
    for bi in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(ho):
                for j in range(wo):
                    patch = xp[bi, g * cg:(g + 1) * cg, i: i + dh * (kh - 1) + 1: dh, j: j + dw * (kw - 1) + 1: dw]
                    y[bi, oc, i, j] = -np.sum(np.abs(patch - w[oc]))
    return y


# (name, C, O, kernel, stride, padding, dilation, groups, bias, H, W)
CASES = [
    ("dense", 3, 4, 3, 1, 1, 1, 1, True, 6, 5),
    ("stride2", 3, 4, 3, 2, 1, 1, 1, False, 7, 7),
    ("depthwise", 4, 4, 3, 1, 1, 1, 4, False, 6, 6),
    ("pointwise", 5, 3, 1, 1, 0, 1, 1, True, 4, 5),
    ("dilated", 2, 4, 3, 1, 2, 2, 2, True, 7, 6),
    ("k5_valid", 2, 3, 5, 1, 0, 1, 1, False, 8, 7),
]


def _build(case, **kwargs) -> ShiftAddConv2d:
    _, c, o, k, s, p, d, g, bias, _, _ = case
    torch.manual_seed(0)
    return ShiftAddConv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_composite_is_shift_conv_then_adder_conv(case):
    layer = _build(case)
    _, c, o, k, s, p, d, g, bias, h, w = case
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2
    # the shift part: the module's own weight/bias through a ShiftConv2d with identical settings
    shift = ShiftConv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, dtype=torch.float64)
    shift.load_state_dict({k_: v for k_, v in layer.state_dict().items() if not k_.startswith("adder.")})
    with torch.no_grad():
        mid = shift(x)
        assert torch.equal(layer.shift_forward(x), mid)
        expected = np_adder_conv2d(mid.numpy(), layer.adder.weight.numpy(), (d * (k - 1) // 2,) * 2, (d, d), g)
        y = layer(x)
    conv_shape = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g)(x.float()).shape
    assert y.shape == conv_shape == expected.shape  # a drop-in for the conv it replaces
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_structure_parameters_and_repr():
    layer = ShiftAddConv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=True, weight_bits=4, eta=0.3)
    assert isinstance(layer, nn.Conv2d) and not isinstance(layer, ShiftConv2d)
    adder = layer.adder
    assert type(adder) is AdderConv2d
    assert (adder.in_channels, adder.out_channels, adder.groups) == (6, 6, 6)
    assert adder.stride == (1, 1) and tuple(adder.padding) == (1, 1) and adder.bias is None
    assert layer.eta == pytest.approx(0.3) and layer.quant_config.weight_bits == 4
    assert set(dict(layer.named_parameters())) == {"weight", "bias", "adder.weight"}
    assert layer.weight.shape == (6, 1, 3, 3) and adder.weight.shape == (6, 1, 3, 3)
    text = repr(layer)
    assert "weight_bits=4" in text and "eta=0.3" in text and "AdderConv2d" in text


def test_same_padding_rules():
    assert adder_same_padding((3, 5), (1, 2)) == (1, 4)
    assert adder_same_padding((2, 3), (2, 1)) == (1, 1)
    with pytest.raises(ValueError, match="odd kernel size"):
        ShiftAddConv2d(3, 4, 2)
    layer = ShiftAddConv2d(3, 4, 2, dilation=2, padding=1)  # d·(k-1) = 2: symmetric
    assert layer(torch.randn(1, 3, 6, 6)).shape == (1, 4, 6, 6)


def test_from_float_copies_shift_part_only():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=True)
    layer = ShiftAddConv2d.from_float(conv, weight_bits=3, eta=0.1)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.quant_config.weight_bits == 3 and layer.eta == pytest.approx(0.1)
    assert layer.adder.weight.shape == (8, 8, 3, 3) and layer.adder.weight.abs().sum() > 0

    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match="plain"):
        ShiftAddConv2d.from_float(MyConv(2, 2, 3))


def test_backward_reaches_every_parameter_and_keeps_weights():
    layer = ShiftAddConv2d(3, 4, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(4)
    w0 = layer.weight.detach().clone()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    bn(layer(x)).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.equal(layer.weight.detach(), w0)


def test_device_dtype_padding_mode_and_conv_forward_guard():
    layer = ShiftAddConv2d(3, 4, 3, padding=1, padding_mode="reflect", device="cpu", dtype=torch.float64)
    assert layer.weight.dtype == layer.adder.weight.dtype == torch.float64
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    shift = ShiftConv2d(3, 4, 3, padding=1, padding_mode="reflect", dtype=torch.float64)
    shift.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    assert torch.equal(layer.shift_forward(x), shift(x))
    assert torch.equal(layer._conv_forward(x, layer.weight, layer.bias), layer(x))
    with pytest.raises(ValueError, match="efficient_conv_bn_eval"):
        layer._conv_forward(x, layer.weight * 2, layer.bias)
    meta = ShiftAddConv2d(3, 4, 3, device="meta")
    assert meta.weight.device.type == "meta" and meta.adder.weight.device.type == "meta"
