"""Hybrid layers (ShiftAddAug eq. 4, docs/algorithms.md §3) against independent float64 references."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftaddaug_plugin.functional.shift import shift_linear
from shiftaddaug_plugin.layers.hybrid import HybridBatchNorm2d, HybridBatchNormAct2d, HybridConv2d, HybridLinear
from shiftaddaug_plugin.modes import Mode, set_mode
from shiftaddaug_plugin.sharing import WeightRemap, gauss_to_laplace


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run adder convs on the compiler-free path: these tests check maths, not kernels (compiles cost seconds)."""
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


# ------------------------------------------------------------------------------------------- naive references


def q_weight(w: Tensor, bits: int = 5) -> Tensor:
    """DeepShift-Q power-of-two rounding, written from docs/algorithms.md §1 (float64)."""
    p_min = -(2 ** (bits - 1) - 1)
    mag = w.abs().clamp(2.0**p_min, 1.0)
    q = torch.sign(w) * torch.exp2(torch.round(torch.log2(mag)))
    return torch.where(w == 0, torch.zeros_like(w), q)


def q_input(x: Tensor, int_bits: int = 16, frac_bits: int = 16) -> Tensor:
    """Fixed-point input (floor), docs/algorithms.md §1."""
    lo, hi = -(2.0 ** (int_bits - 1)), 2.0 ** (int_bits - 1) - 2.0**-frac_bits
    return (torch.floor(x * 2.0**frac_bits) / 2.0**frac_bits).clamp(lo, hi)


def naive_adder(x: Tensor, w: Tensor, stride: Any, padding: Any, dilation: Any, groups: int) -> Tensor:
    """Y[n,o,p] = -sum_{c,k} |X[n,c,p+k] - W[o,c,k]| with zero padding, via unfold (docs/algorithms.md §2)."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    st, pd, dl = (nn.modules.utils._pair(v) for v in (stride, padding, dilation))
    cols = F.unfold(x, (kh, kw), dilation=dl, padding=pd, stride=st).view(n, groups, cg * kh * kw, -1)
    wv = w.reshape(groups, o // groups, cg * kh * kw)
    y = -(cols[:, :, None] - wv[None, :, :, :, None]).abs().sum(3)
    ho = (h + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
    wo = (wd + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
    return y.reshape(n, o, ho, wo)


def ref_mf(layer: HybridConv2d, x: Tensor) -> Tensor:
    """Target operator on the target input, float64, from the layer's parameters."""
    w = layer.weight.detach().double()[: layer.target_out_channels]
    if not layer.depthwise:
        w = w[:, : layer.target_in_channels]
    b = None if layer.bias is None else layer.bias.detach().double()[: layer.target_out_channels]
    groups = layer.target_out_channels if layer.depthwise else 1
    geo = (layer.stride, layer.padding, layer.dilation)
    if layer.op == "mult" or not layer.mf_enabled:
        return F.conv2d(x, w, b, *geo, groups)
    if layer.op == "shift":
        return F.conv2d(q_input(x), q_weight(w), None if b is None else q_input(b), *geo, groups)
    if layer.op == "adder":
        wa = w if layer.remap is None else gauss_to_laplace(w)  # identity FC
        y = naive_adder(x, wa, *geo, groups)
        return y if b is None else y + b.view(1, -1, 1, 1)
    y = F.conv2d(q_input(x), q_weight(w), None if b is None else q_input(b), *geo, groups)
    wa = layer.adder_weight.detach().double()
    wa = wa if layer.remap is None else gauss_to_laplace(wa)
    k = layer.kernel_size[0]
    pad = layer.dilation[0] * (k - 1) // 2
    return naive_adder(y, wa, 1, pad, layer.dilation, groups)


def ref_forward(layer: HybridConv2d, x: Tensor) -> Tensor:
    """Eq. 4 in float64 from the layer's parameters (independent of the layer's forward)."""
    x = x.double()
    if layer.mode == Mode.TARGET:
        return ref_mf(layer, x)
    W = layer.weight.detach().double()
    B = None if layer.bias is None else layer.bias.detach().double()
    geo = (layer.stride, layer.padding, layer.dilation)
    i_t, o_t, i_in = layer.target_in_channels, layer.target_out_channels, x.shape[1]
    y_t = ref_mf(layer, x[:, :i_t])
    if i_in == i_t and (layer.depthwise or layer.active_out_channels == o_t):
        return y_t
    if layer.op == "shift" and layer.mf_enabled:  # the multiplicative parts read the fixed-point target input
        x = torch.cat([q_input(x[:, :i_t]), x[:, i_t:]], 1)
    if layer.depthwise:
        y_a = F.conv2d(x[:, i_t:], W[o_t:i_in], None if B is None else B[o_t:i_in], *geo, i_in - i_t)
        return torch.cat([y_t, y_a], 1)
    if i_in > i_t:
        y_t = y_t + F.conv2d(x[:, i_t:], W[:o_t, i_t:i_in], None, *geo)
    o_a = layer.active_out_channels
    y_a = F.conv2d(x, W[o_t:o_a, :i_in], None if B is None else B[o_t:o_a], *geo)
    return torch.cat([y_t, y_a], 1)


# ------------------------------------------------------------------------------------------- fixtures

CASES: dict[str, dict[str, Any]] = {
    "dense": dict(in_channels=8, out_channels=10, kernel_size=3, stride=2, padding=1,
                  target_in_channels=3, target_out_channels=4),
    "pointwise": dict(in_channels=8, out_channels=10, kernel_size=1, target_in_channels=3, target_out_channels=4),
    "depthwise": dict(in_channels=8, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=8,
                      target_in_channels=3, target_out_channels=3),
}
OPS = ["shift", "adder", "shiftadd", "mult"]


def make_layer(case: str, op: str, *, bias: bool = True, dtype: torch.dtype = torch.float64, seed: int = 0,
               **kwargs: Any) -> HybridConv2d:
    torch.manual_seed(seed)
    layer = HybridConv2d(**CASES[case], bias=bias, op=op, dtype=dtype, **kwargs)
    if bias:
        with torch.no_grad():
            layer.bias.normal_(0, 0.1)
    return layer


def rand_input(layer: HybridConv2d, channels: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(2, channels, 7, 7, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------- HybridConv2d


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", OPS)
def test_target_mode_matches_reference(case: str, op: str) -> None:
    layer = make_layer(case, op)
    layer.mode = Mode.TARGET
    x = rand_input(layer, layer.target_in_channels)
    y = layer(x)
    assert y.shape[1] == layer.target_out_channels
    torch.testing.assert_close(y, ref_forward(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", OPS)
def test_augmented_mode_matches_reference(case: str, op: str) -> None:
    layer = make_layer(case, op)
    for c_in, o_a in [(8, 10), (5, 7), (3, 4)]:  # full, partial, target-only widths on one layer
        if not layer.depthwise:
            layer.active_out_channels = o_a
        x = rand_input(layer, c_in)
        y = layer(x)
        assert y.shape[1] == (c_in if layer.depthwise else o_a)
        torch.testing.assert_close(y, ref_forward(layer, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", OPS)
def test_export_equals_target_mode(case: str, op: str) -> None:
    layer = make_layer(case, op, dtype=torch.float32).eval()
    layer.mode = Mode.TARGET
    x = rand_input(layer, layer.target_in_channels, dtype=torch.float32)
    slim = layer.export()
    expected_type = {"shift": "ShiftConv2d", "adder": "AdderConv2d", "shiftadd": "ShiftAddConv2d", "mult": "Conv2d"}
    assert type(slim).__name__ == expected_type[op]
    assert not isinstance(slim, HybridConv2d) and not slim.training
    assert slim.weight.shape[0] == layer.target_out_channels
    assert (slim.in_channels, slim.out_channels) == (layer.target_in_channels, layer.target_out_channels)
    assert torch.equal(slim(x), layer(x))
    # weights are cloned, not shared
    with torch.no_grad():
        slim.weight.add_(1.0)
    assert not torch.equal(slim.weight, layer.weight[: slim.weight.shape[0], : slim.weight.shape[1]])


@pytest.mark.parametrize("case", ["dense", "depthwise"])
@pytest.mark.parametrize("op", ["shift", "adder", "shiftadd"])
def test_target_mode_equals_plain_mf_layer(case: str, op: str) -> None:
    """Same weights in the plain MF layer (built directly, not via export) give the same output, bit for bit."""
    from shiftaddaug_plugin.layers.adder import AdderConv2d
    from shiftaddaug_plugin.layers.shift import ShiftConv2d
    from shiftaddaug_plugin.layers.shiftadd import ShiftAddConv2d

    layer = make_layer(case, op, dtype=torch.float32)
    layer.mode = Mode.TARGET
    c = CASES[case]
    i_t, o_t = c["target_in_channels"], c["target_out_channels"]
    geo = dict(stride=c.get("stride", 1), padding=c.get("padding", 0), dilation=c.get("dilation", 1),
               groups=o_t if layer.depthwise else 1, bias=True)
    cls = {"shift": ShiftConv2d, "adder": AdderConv2d, "shiftadd": ShiftAddConv2d}[op]
    plain = cls(i_t, o_t, c["kernel_size"], **geo)
    w_t = layer.weight[:o_t] if layer.depthwise else layer.weight[:o_t, :i_t]
    with torch.no_grad():
        plain.weight.copy_(w_t)
        plain.bias.copy_(layer.bias[:o_t])
        if op == "shiftadd":
            plain.adder.weight.copy_(layer.adder_weight)
    x = rand_input(layer, i_t, dtype=torch.float32)
    assert torch.equal(plain(x), layer(x))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", ["shift", "adder", "shiftadd"])
def test_every_parameter_in_use_gets_gradient(case: str, op: str) -> None:
    layer = make_layer(case, op, dtype=torch.float32, remap=True if op != "shift" else None)
    c_in, o_a = 6, 7
    if not layer.depthwise:
        layer.active_out_channels = o_a
    x = rand_input(layer, c_in, dtype=torch.float32).requires_grad_(True)
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad != 0).any()
    g, gb = layer.weight.grad, layer.bias.grad
    o_t, i_t = layer.target_out_channels, layer.target_in_channels
    if layer.depthwise:
        used = [g[:o_t], g[o_t:c_in]]
        assert (g[c_in:] == 0).all() and (gb[c_in:] == 0).all() and (gb[:c_in] != 0).all()
    else:
        used = [g[:o_t, :i_t], g[:o_t, i_t:c_in], g[o_t:o_a, :c_in]]
        assert (g[o_a:] == 0).all() and (g[:, c_in:] == 0).all()
        assert (gb[:o_a] != 0).all() and (gb[o_a:] == 0).all()
    for block in used:
        assert torch.isfinite(block).all() and (block != 0).any()
    if op == "shiftadd":
        assert layer.adder_weight.grad is not None and (layer.adder_weight.grad != 0).any()
    if layer.remap is not None:
        for p in layer.remap.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).any()


def test_frozen_remap_gets_no_gradient() -> None:
    layer = make_layer("dense", "adder", dtype=torch.float32, remap=WeightRemap(3).freeze())
    y = layer(rand_input(layer, 8, dtype=torch.float32))
    y.sum().backward()
    assert all(p.grad is None for p in layer.remap.parameters())
    assert layer.weight.grad is not None


def test_width_changes_per_call_without_rebuild() -> None:
    layer = make_layer("pointwise", "shift")
    params = [id(p) for p in layer.parameters()]
    for c_in, o_a in [(3, 4), (8, 10), (4, 9), (7, 5)]:
        layer.active_out_channels = o_a
        x = rand_input(layer, c_in, seed=c_in)
        y = layer(x)
        assert y.shape == (2, o_a, 7, 7)
        torch.testing.assert_close(y, ref_forward(layer, x), rtol=1e-9, atol=1e-9)
    assert [id(p) for p in layer.parameters()] == params
    assert layer.weight.shape == (10, 8, 1, 1)


@pytest.mark.parametrize("op", ["shift", "adder", "shiftadd"])
def test_mf_enabled_switch(op: str) -> None:
    layer = make_layer("dense", op)
    layer.mode = Mode.TARGET
    x = rand_input(layer, 3)
    w_t, b_t = layer.weight[:4, :3], layer.bias[:4]
    mf = layer(x)
    layer.mf_enabled = False
    conv = F.conv2d(x, w_t, b_t, 2, 1)
    torch.testing.assert_close(layer(x), conv, rtol=0, atol=0)
    assert type(layer.export()) is nn.Conv2d
    with set_mode(layer, Mode.AUGMENTED):
        torch.testing.assert_close(layer(rand_input(layer, 8)), ref_forward(layer, rand_input(layer, 8)))
    layer.mf_enabled = True
    assert torch.equal(layer(x), mf)
    assert not torch.allclose(mf, conv)


def test_remap_used_by_adder_target_only() -> None:
    layer = make_layer("dense", "adder", remap=True)
    w_t = layer.weight.detach()[:4, :3]
    torch.testing.assert_close(layer.adder_weight_for_target(), gauss_to_laplace(w_t))
    x = rand_input(layer, 8)
    torch.testing.assert_close(layer(x), ref_forward(layer, x), rtol=1e-9, atol=1e-9)
    layer.float()
    slim = layer.export()
    torch.testing.assert_close(slim.weight, gauss_to_laplace(layer.weight.detach()[:4, :3]))
    assert torch.equal(slim.weight, layer.adder_weight_for_target())
    # the stored weight stays Gaussian (the multiplicative part reads it unchanged)
    assert not torch.allclose(layer.weight[:4, :3], slim.weight)
    layer.mode = Mode.TARGET
    x32 = rand_input(layer, 3, dtype=torch.float32)
    assert torch.equal(slim(x32), layer(x32))


def test_remap_shiftadd_exports_remapped_adder() -> None:
    layer = make_layer("pointwise", "shiftadd", dtype=torch.float32, remap={"b": 0.05})
    assert layer.remap.b == 0.05
    layer.mode = Mode.TARGET
    slim = layer.export()
    torch.testing.assert_close(slim.adder.weight, gauss_to_laplace(layer.adder_weight.detach(), b=0.05))
    torch.testing.assert_close(slim.weight, layer.weight[:4, :3], rtol=0, atol=0)  # shift reads the stored weight
    x = rand_input(layer, 3, dtype=torch.float32)
    assert torch.equal(slim(x), layer(x))


def test_reflect_padding_mode() -> None:
    layer = make_layer("dense", "shift", padding_mode="reflect")
    x = rand_input(layer, 6)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    ref_layer = make_layer("dense", "shift", padding_mode="zeros")
    ref_layer.padding = (0, 0)
    ref_layer.active_out_channels = layer.active_out_channels
    torch.testing.assert_close(layer(x), ref_forward(ref_layer, xp), rtol=1e-9, atol=1e-9)
    for op in ("shift", "adder", "shiftadd"):
        layer = make_layer("dense", op, padding_mode="reflect", dtype=torch.float32)
        layer.mode = Mode.TARGET
        xt = rand_input(layer, 3, dtype=torch.float32)
        assert torch.equal(layer.export()(xt), layer(xt))


def test_adder_under_autocast() -> None:
    layer = make_layer("dense", "adder", dtype=torch.float32)
    x = rand_input(layer, 8, dtype=torch.float32)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        y.float().sum().backward()
    assert torch.isfinite(y).all() and y.dtype == torch.float32
    torch.testing.assert_close(y, y32, rtol=2e-2, atol=5e-2)
    assert torch.isfinite(layer.weight.grad).all()
    layer.mode = Mode.TARGET
    xt = x[:, :3].contiguous()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yt = layer(xt)
    assert yt.dtype == torch.float32 and torch.equal(yt, layer(xt))  # adder sums stay fp32


def test_bad_arguments() -> None:
    kw = dict(target_in_channels=2, target_out_channels=2)
    with pytest.raises(ValueError, match="depthwise"):
        HybridConv2d(8, 8, 3, groups=2, **kw)
    with pytest.raises(ValueError, match="target_in_channels"):
        HybridConv2d(4, 4, 1, target_in_channels=5, target_out_channels=2)
    with pytest.raises(ValueError, match="target_out_channels"):
        HybridConv2d(4, 4, 1, target_in_channels=2, target_out_channels=0)
    with pytest.raises(ValueError, match="target_in_channels == target_out_channels"):
        HybridConv2d(4, 4, 3, groups=4, target_in_channels=2, target_out_channels=3)
    with pytest.raises(ValueError, match="unknown op"):
        HybridConv2d(4, 4, 1, op="xnor", **kw)
    with pytest.raises(ValueError, match="allowed keys"):
        HybridConv2d(4, 4, 1, op="shift", op_kwargs={"eta": 0.1}, **kw)
    with pytest.raises(ValueError, match="remap"):
        HybridConv2d(4, 4, 1, op="shift", remap=True, **kw)
    with pytest.raises(ValueError, match="kernel"):
        HybridConv2d(4, 4, 1, op="adder", remap=WeightRemap(3), **kw)
    with pytest.raises(ValueError, match="odd kernel"):
        HybridConv2d(4, 4, 2, op="shiftadd", **kw)
    with pytest.raises(TypeError, match="remap must be"):
        HybridConv2d(4, 4, 1, op="adder", remap="laplace", **kw)
    layer = HybridConv2d(4, 6, 1, op="shift", **kw)
    with pytest.raises(ValueError, match="active_out_channels"):
        layer.active_out_channels = 1
    with pytest.raises(ValueError, match="active_out_channels"):
        layer.active_out_channels = 7
    with pytest.raises(ValueError, match="between"):
        layer(torch.randn(1, 5, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        layer(torch.randn(4, 3, 3))
    layer.mode = Mode.TARGET
    with pytest.raises(ValueError, match="TARGET mode expects 2"):
        layer(torch.randn(1, 4, 3, 3))
    with pytest.raises(AttributeError):
        layer.target_out_channels = 3  # type: ignore[misc]


def test_state_dict_keys() -> None:
    kw = dict(target_in_channels=2, target_out_channels=2)
    assert set(HybridConv2d(4, 4, 3, bias=True, op="shift", **kw).state_dict()) == {"weight", "bias"}
    assert set(HybridConv2d(4, 4, 3, op="mult", **kw).state_dict()) == {"weight"}
    sa = HybridConv2d(4, 6, 3, op="shiftadd", **kw)
    assert set(sa.state_dict()) == {"weight", "adder_weight"}
    assert sa.adder_weight.shape == (2, 2, 3, 3)
    dw = HybridConv2d(6, 6, 3, groups=6, op="shiftadd", target_in_channels=4, target_out_channels=4)
    assert dw.adder_weight.shape == (4, 1, 3, 3)
    ad = HybridConv2d(4, 4, 3, op="adder", remap=True, **kw)
    assert set(ad.state_dict()) == {"weight", "remap.fc.weight", "remap.fc.bias", "remap.frozen_flag"}
    # round trip through a plain conv state dict
    conv = nn.Conv2d(4, 4, 3, bias=True)
    hyb = HybridConv2d(4, 4, 3, bias=True, op="shift", **kw)
    hyb.load_state_dict(conv.state_dict())
    assert torch.equal(hyb.weight, conv.weight)


def test_set_mode_and_timm_reparameterize() -> None:
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    model = nn.Sequential(
        HybridConv2d(3, 8, 3, padding=1, op="shift", target_in_channels=3, target_out_channels=4),
        HybridBatchNorm2d(8, target_num_features=4),
        nn.ReLU(),
        HybridConv2d(8, 8, 3, padding=1, groups=8, op="adder", target_in_channels=4, target_out_channels=4),
        HybridBatchNorm2d(8, target_num_features=4),
    )
    x = torch.randn(2, 3, 6, 6)
    model.train()(x)  # populate BN statistics
    model.eval()
    assert model(x).shape[1] == 8
    set_mode(model, Mode.TARGET)
    assert all(m.mode == Mode.TARGET for m in model if hasattr(m, "mode"))
    y = model(x)
    assert y.shape[1] == 4
    slim = reparameterize_model(model)
    assert [type(m).__name__ for m in slim] == ["ShiftConv2d", "BatchNorm2d", "ReLU", "AdderConv2d", "BatchNorm2d"]
    assert torch.equal(slim(x), y)
    assert isinstance(model[0], HybridConv2d)  # not in place by default


# ------------------------------------------------------------------------------------------- HybridLinear


def ref_linear(layer: HybridLinear, x: Tensor) -> Tensor:
    W, b = layer.weight.detach().double(), layer.bias.detach().double()
    i_t = layer.target_in_features
    if layer.op == "shift" and layer.mf_enabled:
        y = F.linear(q_input(x[..., :i_t]), q_weight(W[:, :i_t]), q_input(b))
    else:
        y = F.linear(x[..., :i_t], W[:, :i_t], b)
    if layer.mode == Mode.AUGMENTED and x.shape[-1] > i_t:
        y = y + F.linear(x[..., i_t:], W[:, i_t: x.shape[-1]])
    return y


@pytest.mark.parametrize("op", ["shift", "mult"])
def test_hybrid_linear(op: str) -> None:
    torch.manual_seed(0)
    layer = HybridLinear(12, 5, dtype=torch.float64, target_in_features=4, op=op)
    g = torch.Generator().manual_seed(3)
    for c in (12, 7, 4):
        x = torch.randn(3, c, generator=g, dtype=torch.float64)
        y = layer(x)
        assert y.shape == (3, 5)
        torch.testing.assert_close(y, ref_linear(layer, x), rtol=1e-9, atol=1e-9)
    layer.mode = Mode.TARGET
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref_linear(layer, x), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="TARGET mode expects 4"):
        layer(torch.randn(3, 5, dtype=torch.float64))
    slim = layer.float().export()
    assert type(slim).__name__ == ("ShiftLinear" if op == "shift" else "Linear") and slim.in_features == 4
    x32 = x.float()
    assert torch.equal(slim(x32), layer(x32))
    layer.mode = Mode.AUGMENTED
    layer.double()
    for shape in ((3, 9), (2, 3, 9)):  # the 2-D input takes the one-copy quantiser, the 3-D one the sliced form
        x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        y = layer(x)
        torch.testing.assert_close(y, ref_linear(layer, x_ref), rtol=1e-9, atol=1e-9)
        grads = torch.autograd.grad(y.square().sum(), (x, layer.weight, layer.bias))
        w, i_t = layer.weight, layer.target_in_features  # gradients: the two parts of eq. 4 computed separately
        y_t = (shift_linear(x_ref[..., :i_t], w[:, :i_t], layer.bias, layer.quant_config) if op == "shift"
               else F.linear(x_ref[..., :i_t], w[:, :i_t], layer.bias))
        y_two = y_t + F.linear(x_ref[..., i_t:], w[:, i_t:9])
        grads_ref = torch.autograd.grad(y_two.square().sum(), (x_ref, layer.weight, layer.bias))
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    layer.float()
    x = torch.randn(3, 9, requires_grad=True)
    layer(x).square().sum().backward()
    assert (layer.weight.grad[:, :9] != 0).all() and (layer.weight.grad[:, 9:] == 0).all()
    assert (layer.bias.grad != 0).all()
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_hybrid_linear_bad_args_and_mf_switch() -> None:
    with pytest.raises(ValueError, match="'adder' has no linear layer"):
        HybridLinear(8, 2, target_in_features=4, op="adder")
    with pytest.raises(ValueError, match="unknown op"):
        HybridLinear(8, 2, target_in_features=4, op="conv")
    with pytest.raises(ValueError, match="target_in_features"):
        HybridLinear(8, 2, target_in_features=9)
    layer = HybridLinear(8, 2, dtype=torch.float64, target_in_features=4)
    layer.mf_enabled = False
    x = torch.randn(2, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert type(layer.export()) is nn.Linear


# ------------------------------------------------------------------------------------------- BatchNorm


def test_batchnorm_slices_and_updates_only_used_stats() -> None:
    torch.manual_seed(0)
    bn = HybridBatchNorm2d(8, target_num_features=3, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref = nn.BatchNorm2d(5, dtype=torch.float64)
    ref.load_state_dict({k: (v[:5] if v.dim() else v) for k, v in bn.state_dict().items()})
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64) * 2 + 1
    y = bn(x)
    torch.testing.assert_close(y, ref(x))
    torch.testing.assert_close(bn.running_mean[:5], ref.running_mean)
    torch.testing.assert_close(bn.running_var[:5], ref.running_var)
    assert (bn.running_mean[:5] != 0).all()
    assert torch.equal(bn.running_mean[5:], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(bn.running_var[5:], torch.ones(3, dtype=torch.float64))
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x), ref(x))
    with pytest.raises(ValueError, match="at most 8"):
        bn(torch.randn(1, 9, 2, 2, dtype=torch.float64))
    bn.mode = Mode.TARGET
    with pytest.raises(ValueError, match="TARGET mode expects 3"):
        bn(x)
    slim = bn.export()
    assert type(slim) is nn.BatchNorm2d and slim.num_features == 3 and not slim.training
    xt = x[:, :3]
    assert torch.equal(slim(xt), bn(xt))
    assert bn.export(num_features=5).num_features == 5
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(2).state_dict())
    # gradients reach only the used slice of the affine parameters
    bn.train()
    bn.mode = Mode.AUGMENTED
    bn(x).mul(torch.randn_like(x)).sum().backward()
    assert (bn.weight.grad[:5] != 0).all() and (bn.weight.grad[5:] == 0).all()


def test_batchnorm_momentum_none_and_no_affine() -> None:
    bn = HybridBatchNorm2d(6, momentum=None, affine=False, target_num_features=2)
    ref = nn.BatchNorm2d(4, momentum=None, affine=False)
    for _ in range(3):
        x = torch.randn(3, 4, 2, 2)
        torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var[:4], ref.running_var)
    slim = bn.export()
    assert slim.weight is None and slim.num_features == 2


def test_batchnorm_act_roundtrip_with_timm() -> None:
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    src = BatchNormAct2d(4, act_layer=nn.ReLU6)
    src.train()(torch.randn(8, 4, 3, 3) * 3)
    hyb = HybridBatchNormAct2d.from_timm(src, num_features=10, target_num_features=4)
    assert isinstance(hyb.act, nn.ReLU6)
    src.eval()
    hyb.eval()
    x = torch.randn(2, 4, 3, 3) * 3
    assert torch.equal(hyb(x), src(x))
    assert hyb(torch.randn(2, 9, 3, 3)).shape[1] == 9
    hyb.mode = Mode.TARGET
    slim = hyb.export()
    assert type(slim) is BatchNormAct2d and slim.num_features == 4 and isinstance(slim.act, nn.ReLU6)
    assert torch.equal(slim(x), hyb(x))
    direct = HybridBatchNormAct2d(6, act_layer="relu", target_num_features=3)
    assert isinstance(direct.act, nn.ReLU) and isinstance(direct.drop, nn.Identity)
    with pytest.raises(TypeError, match="BatchNormAct2d"):
        HybridBatchNormAct2d.from_timm(nn.BatchNorm2d(4), 8, 4)
    assert torch.isfinite(direct(torch.randn(2, 6, 2, 2))).all()
