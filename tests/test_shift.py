"""DeepShift-Q shift operators (docs/algorithms.md §1): quantisers, float path, integer path, layers.

References are independent float64 NumPy computations (naive loops), not the code under test.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from shiftaddaug_plugin.functional.shift import (
    ShiftQuantConfig,
    input_to_fixed_point_int,
    quantize_input_fixed_point,
    quantize_leading_channels,
    round_weight_to_power_of_two,
    shift_conv2d,
    shift_linear,
    weight_to_sign_shift,
)
from shiftaddaug_plugin.functional.shift_integer import shift_conv2d_integer, shift_linear_integer
from shiftaddaug_plugin.layers.shift import ShiftConv2d, ShiftLinear

# ------------------------------------------------------------------------------------------- NumPy references


def _exact_round_log2(value: float) -> int:
    """round(log2(value)) for a positive float, in exact rational arithmetic (no tie is possible: 2^(p+1/2) is
    irrational). With k = floor(log2(value^2)), round(log2 value) = floor((k + 1) / 2)."""
    m = Fraction(value) ** 2
    k = m.numerator.bit_length() - m.denominator.bit_length()
    while Fraction(2) ** k > m:
        k -= 1
    while Fraction(2) ** (k + 1) <= m:
        k += 1
    return (k + 1) // 2


def np_weight_q(w: np.ndarray, cfg: ShiftQuantConfig) -> np.ndarray:
    """sign(w) * 2^round(log2(clamp(|w|, 2^p_min, 2^p_max))), decided exactly (np.log2 misrounds near ties)."""
    out = np.zeros_like(w, dtype=np.float64)
    for idx, value in np.ndenumerate(w):
        if value != 0:
            mag = min(max(abs(float(value)), 2.0**cfg.p_min), 2.0**cfg.p_max)
            out[idx] = math.copysign(2.0 ** _exact_round_log2(mag), value)
    return out


def np_input_q(x: np.ndarray, cfg: ShiftQuantConfig) -> np.ndarray:
    scaled = x * 2.0**cfg.act_frac_bits
    r = np.floor(scaled) if cfg.act_rounding == "floor" else np.round(scaled)  # np.round: ties to even
    lo = -(2.0 ** (cfg.act_int_bits - 1))
    hi = 2.0 ** (cfg.act_int_bits - 1) - 2.0**-cfg.act_frac_bits
    return np.clip(r / 2.0**cfg.act_frac_bits, lo, hi)


def np_conv2d(x, w, b, stride, padding, dilation, groups):
    """Naive float64 loop convolution; padding = (top, bottom, left, right) zeros."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, ho, wo))
    for bi in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(ho):
                for j in range(wo):
                    patch = xp[bi, g * cg:(g + 1) * cg, i * sh: i * sh + dh * (kh - 1) + 1: dh,
                               j * sw: j * sw + dw * (kw - 1) + 1: dw]
                    y[bi, oc, i, j] = np.sum(patch * w[oc]) + (0.0 if b is None else b[oc])
    return y


def shift_reference(x, w, b, stride, padding, dilation, groups, cfg):
    """float64 reference of the shift conv: quantise with NumPy, then the naive loop conv."""
    xq = np_input_q(x.numpy(), cfg) if cfg.quantize_input else x.numpy()
    wq = np_weight_q(w.numpy(), cfg)
    bq = None if b is None else (np_input_q(b.numpy(), cfg) if cfg.quantize_input else b.numpy())
    return torch.from_numpy(np_conv2d(xq, wq, bq, stride, padding, dilation, groups))


def _rand(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# (name, N, C, H, W, O, k, stride, padding, dilation, groups, bias)
CONV_CASES = [
    ("dense", 2, 4, 7, 6, 5, (3, 3), (1, 1), (0, 0), (1, 1), 1, False),
    ("pointwise", 2, 6, 5, 5, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("depthwise", 2, 6, 8, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, True),
    ("stride2", 1, 3, 9, 8, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ("padding", 2, 3, 5, 6, 4, (3, 3), (1, 1), (2, 2), (1, 1), 1, False),
    ("dilation", 1, 4, 9, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, True),
    ("grouped_rect", 2, 4, 7, 8, 6, (3, 1), (2, 1), (1, 0), (1, 1), 2, True),
    ("depthwise_s2_k5", 1, 4, 11, 10, 8, (5, 5), (2, 2), (2, 2), (1, 1), 4, False),
]


def _case_tensors(case, seed=0):
    _, n, c, h, w_, o, k, stride, padding, dilation, groups, bias = case
    x = _rand(n, c, h, w_, scale=2.0, seed=seed)
    w = _rand(o, c // groups, *k, scale=0.4, seed=seed + 1)
    b = _rand(o, seed=seed + 2) if bias else None
    return x, w, b, stride, padding, dilation, groups


# --------------------------------------------------------------------------------------------------- config


def test_config_defaults_give_deepshift_ranges():
    cfg = ShiftQuantConfig()
    assert (cfg.weight_bits, cfg.p_min, cfg.p_max) == (5, -15, 0)
    assert (cfg.act_int_bits, cfg.act_frac_bits, cfg.act_rounding) == (16, 16, "floor")
    assert cfg.act_min == -32768.0 and cfg.act_max == 32768.0 - 2.0**-16
    assert cfg.act_int_range == (-(2**31), 2**31 - 1)
    assert ShiftQuantConfig(weight_bits=3).p_min == -3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.weight_bits = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight_bits=1), "weight_bits"),
        (dict(weight_bits=9), "weight_bits"),
        (dict(weight_bits=5.0), "weight_bits"),
        (dict(weight_bits=True), "weight_bits"),
        (dict(act_int_bits=0), "act_int_bits"),
        (dict(act_frac_bits=-1), "act_frac_bits"),
        (dict(act_int_bits=30, act_frac_bits=30), "53"),
        (dict(act_rounding="nearest"), "act_rounding"),
        (dict(quantize_input=1), "quantize_input"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShiftQuantConfig(**kwargs)


def test_functions_reject_wrong_config_type():
    with pytest.raises(TypeError, match="ShiftQuantConfig"):
        round_weight_to_power_of_two(torch.ones(3), {"weight_bits": 5})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ quantisers


@pytest.mark.parametrize("weight_bits", [2, 3, 5, 8])
def test_weight_quantiser_matches_reference_and_is_power_of_two(weight_bits):
    cfg = ShiftQuantConfig(weight_bits=weight_bits)
    g = torch.Generator().manual_seed(weight_bits)
    mags = torch.exp2(torch.empty(4000, dtype=torch.float64).uniform_(-140, 4, generator=g))
    signs = torch.where(torch.rand(4000, generator=g) < 0.5, -1.0, 1.0).double()
    w = mags * signs
    # boundary cases: around 2^(p + 1/2) and the clamp limits
    edges = torch.tensor([2.0 ** (p + 0.5) for p in range(cfg.p_min - 1, 1)], dtype=torch.float64)
    w = torch.cat([w, edges, torch.nextafter(edges, torch.zeros_like(edges)), torch.nextafter(edges, 2 * edges),
                   -edges, torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0**cfg.p_min, 2.0**(cfg.p_min - 1), 1e300])])
    q = round_weight_to_power_of_two(w, cfg)
    expected = torch.from_numpy(np_weight_q(w.numpy(), cfg))
    assert torch.equal(q, expected)
    nz = q != 0
    mant, exp = torch.frexp(q[nz].abs())
    assert torch.all(mant == 0.5)
    assert int(exp.min()) - 1 >= cfg.p_min and int(exp.max()) - 1 <= cfg.p_max
    assert torch.equal(torch.sign(q), torch.sign(w))
    # float32 input: same rounding decisions as float64 for float32-representable values
    w32 = w.float()
    finite = torch.isfinite(w32)
    q32 = round_weight_to_power_of_two(w32[finite], cfg)
    assert q32.dtype == torch.float32
    assert torch.equal(q32.double(), torch.from_numpy(np_weight_q(w32[finite].double().numpy(), cfg)))


def test_weight_quantiser_keeps_zeros_and_clamps_range():
    cfg = ShiftQuantConfig()
    w = torch.tensor([0.0, 1e-12, -1e-12, 3.0, -100.0, 0.3, -0.36, 0.7, 0.71])
    q = round_weight_to_power_of_two(w, cfg)
    assert q.tolist() == [0.0, 2.0**-15, -(2.0**-15), 1.0, -1.0, 0.25, -0.5, 0.5, 1.0]


def test_weight_quantiser_ste_gradient_is_clamp_mask():
    cfg = ShiftQuantConfig()
    w = torch.tensor([0.0, 1e-9, -0.3, 0.99, 1.0, 1.5, -2.0, 0.02], requires_grad=True)
    g = torch.arange(1.0, 9.0)
    round_weight_to_power_of_two(w, cfg).backward(g)
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 8.0]  # identity except saturated |w| > 2^p_max


def test_weight_quantiser_is_out_of_place():
    w = nn.Parameter(torch.tensor([5.0, -1e-9, 0.3, -7.0]))
    before, version = w.detach().clone(), w._version
    q = round_weight_to_power_of_two(w, ShiftQuantConfig())
    q.sum().backward()
    assert torch.equal(w.detach(), before) and w._version == version
    assert q.data_ptr() != w.data_ptr()


@pytest.mark.parametrize("rounding", ["floor", "round"])
@pytest.mark.parametrize("int_bits, frac_bits", [(16, 16), (3, 4), (1, 2), (8, 0)])
def test_input_quantiser_matches_reference(rounding, int_bits, frac_bits):
    cfg = ShiftQuantConfig(act_int_bits=int_bits, act_frac_bits=frac_bits, act_rounding=rounding)
    x = torch.cat([_rand(3000, scale=3.0, seed=1), _rand(300, scale=1e5, seed=2),
                   torch.tensor([0.5, -0.5, 1.5, 2.5, -2.5, 0.375, -0.375]) * 2.0**-frac_bits,
                   torch.tensor([cfg.act_max, cfg.act_min, 1e9, -1e9])])
    q = quantize_input_fixed_point(x, cfg)
    assert torch.equal(q, torch.from_numpy(np_input_q(x.numpy(), cfg)))
    assert float(q.min()) >= cfg.act_min and float(q.max()) <= cfg.act_max
    scaled = q * 2.0**frac_bits
    assert torch.equal(scaled, scaled.round())  # on the 2^-f grid
    ints = input_to_fixed_point_int(x, cfg)
    assert ints.dtype == torch.int64 and torch.equal(ints.double(), scaled)


def test_input_quantiser_float32_exact_and_half_dtype():
    cfg = ShiftQuantConfig()
    x = _rand(2000, scale=10.0, seed=3).float()
    q = quantize_input_fixed_point(x, cfg)
    assert q.dtype == torch.float32
    assert torch.equal(q.double(), torch.from_numpy(np_input_q(x.double().numpy(), cfg)))
    for dt in (torch.float16, torch.bfloat16):
        qh = quantize_input_fixed_point(x.to(dt), cfg)
        assert qh.dtype == dt and torch.isfinite(qh).all()  # computed in fp32: x * 2^16 would overflow fp16
    with pytest.raises(TypeError, match="floating-point"):
        quantize_input_fixed_point(torch.arange(3), cfg)


def test_input_quantiser_ste_gradient_is_range_mask():
    cfg = ShiftQuantConfig(act_int_bits=3, act_frac_bits=2)  # range [-4, 3.75]
    x = torch.tensor([-5.0, -4.0, -1.3, 0.1, 3.75, 3.8, 100.0], dtype=torch.float64, requires_grad=True)
    q = quantize_input_fixed_point(x, cfg)
    assert q.tolist() == [-4.0, -4.0, -1.5, 0.0, 3.75, 3.75, 3.75]
    q.backward(torch.full_like(x, 2.0))
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0]


def _plain_formulation(monkeypatch):
    """Make the quantisers take their plain-op (torch.compile trace) formulation, run eagerly."""
    from shiftaddaug_plugin.functional import shift as shift_module

    monkeypatch.setattr(shift_module, "_is_compiling", lambda: True)


def _fast_and_plain(run):
    """``[run() on the fast formulation, run() on the plain-op formulation]`` (quantiser equivalence tests)."""
    results = []
    for plain in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            if plain:
                _plain_formulation(mp)
            results.append(run())
    return results


def _edge_inputs(cfg, dtype, seed):
    """Large enough for the vectorised kernels; in-range values plus the exact bounds, out-of-range, inf, NaN."""
    lo, hi = cfg.act_min, cfg.act_max
    base = _rand(5000, scale=2.0 ** (cfg.act_int_bits - 2), seed=seed)
    special = torch.tensor([lo, hi, -0.0, 0.0, 2.0**-cfg.act_frac_bits / 3, -(2.0**-cfg.act_frac_bits) / 3,
                            hi + 2.0**-cfg.act_frac_bits / 4, lo - 2.0**-cfg.act_frac_bits / 4, 1e30, -1e30,
                            float("inf"), float("-inf"), float("nan")], dtype=torch.float64)
    return base.to(dtype), torch.cat([base, special]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rounding, int_bits, frac_bits", [("floor", 16, 16), ("round", 3, 4), ("floor", 20, 12)])
def test_input_quantiser_fast_and_masked_paths_equal_plain_ste(monkeypatch, dtype, rounding, int_bits, frac_bits):
    """The autograd Function (in-range fast path and masked path) gives the plain STE formulation's values and
    gradients exactly: identity inside [act_min, act_max] (bounds compared in the input's dtype), 0 outside, and 0
    (not NaN) where an out-of-range element receives an inf gradient."""
    cfg = ShiftQuantConfig(act_int_bits=int_bits, act_frac_bits=frac_bits, act_rounding=rounding)
    for x in _edge_inputs(cfg, dtype, seed=int_bits + frac_bits):
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
        outside = ~((x >= cfg.act_min) & (x <= cfg.act_max))
        g[outside.nonzero()[:1]] = float("inf")  # a non-finite gradient must still be masked to exactly 0
        def run(x=x, g=g, cfg=cfg):
            leaf = x.clone().requires_grad_()
            q = quantize_input_fixed_point(leaf, cfg)
            q.backward(g)
            return q.detach(), leaf.grad

        (q_fast, g_fast), (q_plain, g_plain) = _fast_and_plain(run)
        assert q_fast.dtype == dtype
        torch.testing.assert_close(q_fast, q_plain, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(g_fast, g_plain, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(g_fast, torch.where(outside, torch.zeros_like(g), g), rtol=0, atol=0)
        finite = torch.isfinite(x)
        expected = torch.from_numpy(np_input_q(x[finite].double().numpy(), cfg))
        if dtype == torch.float64:
            assert torch.equal(q_fast[finite], expected)
        if not outside.any():  # fast path: the incoming gradient is passed through untouched
            assert torch.equal(g_fast, g)


def test_input_quantiser_gradcheck_float64():
    """float64 gradcheck of the fixed-point Function: with 51 fraction bits the quantiser is the identity up to
    2^-51 inside [-2, 2 - 2^-51] and constant outside, so the numerical derivative is exactly the STE's mask."""
    cfg = ShiftQuantConfig(act_int_bits=2, act_frac_bits=51)
    inside = (torch.rand(3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64) - 0.5) * 3.0
    mixed = torch.cat([inside.flatten(), torch.tensor([-2.7, 2.6, 3.1, -1.2], dtype=torch.float64)])
    for x in (inside, mixed):  # fast (all in range) and masked paths
        assert torch.autograd.gradcheck(lambda t: quantize_input_fixed_point(t, cfg), (x.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n", [0, 1, 3, 5])
@pytest.mark.parametrize("saturate", [False, True])
def test_leading_channel_quantiser_equals_slice_quantise_cat(dtype, n, saturate):
    """quantize_leading_channels(x, n) has the values and gradients of cat([Q(x[:, :n]), x[:, n:]]) exactly, on a
    channel-sliced (non-contiguous) input, in range (gradient passed through) and with saturated / NaN elements
    among the leading channels and among the float ones (masked only where quantised)."""
    cfg = ShiftQuantConfig(act_int_bits=3, act_frac_bits=4)
    gen = torch.Generator().manual_seed(n)
    base = (torch.rand(2, 7, 3, 4, generator=gen, dtype=torch.float64) - 0.5) * 7.0
    if saturate:
        base[0, 0, 0, :3] = torch.tensor([9.0, -11.0, float("nan")], dtype=torch.float64)
        base[1, 4, 1, :2] = torch.tensor([12.0, float("nan")], dtype=torch.float64)
    wide = base.to(dtype)
    g = torch.randn(2, 5, 3, 4, generator=gen).to(dtype)

    def run(fn):
        leaf = wide.clone().requires_grad_()
        y = fn(leaf[:, :5])
        y.backward(g)
        return y.detach(), leaf.grad

    y_new, g_new = run(lambda t: quantize_leading_channels(t, n, cfg))
    y_ref, g_ref = run(lambda t: torch.cat([quantize_input_fixed_point(t[:, :n], cfg), t[:, n:]], 1))
    assert y_new.dtype == dtype and y_new.shape == (2, 5, 3, 4)
    torch.testing.assert_close(y_new, y_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(g_new, g_ref, rtol=0, atol=0, equal_nan=True)
    if saturate and 0 < n <= 4:  # channel 4 stays float: its saturated elements keep their gradient
        assert g_new[0, 0, 0, :3].eq(0).all() and g_new[1, 4, 1, :2].ne(0).all()


def test_leading_channel_quantiser_gradcheck_float64_and_rejects_bad_counts():
    """float64 gradcheck (51 fraction bits: the quantiser is the identity up to 2^-51 in range, constant outside)
    on both paths, and a clear error for a channel count outside [0, C]."""
    cfg = ShiftQuantConfig(act_int_bits=2, act_frac_bits=51)
    x = (torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 0.5) * 3.0
    mixed = x.clone()
    mixed[0, 0, :2] = torch.tensor([2.7, -3.1], dtype=torch.float64)
    for t in (x, mixed):
        assert torch.autograd.gradcheck(lambda v: quantize_leading_channels(v, 2, cfg), (t.requires_grad_(),))
    with pytest.raises(ValueError, match=r"n must be in \[0, 4\]"):
        quantize_leading_channels(x, 5, cfg)


def test_weight_ste_function_gradcheck_float64():
    """float64 gradcheck of the masked straight-through Function used by the weight quantiser (value: a clamp,
    whose true derivative is the STE mask away from the clamp bounds)."""
    from shiftaddaug_plugin.functional.shift import _MaskedSTE

    w = torch.tensor([-1.7, -0.6, 0.0, 0.3, 0.95, 1.4], dtype=torch.float64, requires_grad=True)
    fn = lambda t: _MaskedSTE.apply(t, t.detach().clamp(-1.0, 1.0), t.detach().abs() <= 1.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w,))


def test_weight_quantiser_matches_plain_ste(monkeypatch):
    cfg = ShiftQuantConfig(weight_bits=4)
    w0 = torch.cat([_rand(200, scale=0.7, seed=9), torch.tensor([0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e-12])])
    g = _rand(w0.numel(), seed=10)
    def run():
        w = w0.clone().requires_grad_()
        q = round_weight_to_power_of_two(w, cfg)
        q.backward(g)
        return q.detach(), w.grad

    results = _fast_and_plain(run)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][0], torch.from_numpy(np_weight_q(w0.numpy(), cfg)))


# ----------------------------------------------------------------------------------------------- float path


def _torch_padding(padding):
    return padding[0], padding[0], padding[1], padding[1]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_shift_conv2d_float_and_integer_paths_match_reference(case):
    cfg = ShiftQuantConfig()
    x, w, b, stride, padding, dilation, groups = _case_tensors(case)
    ref = shift_reference(x, w, b, stride, _torch_padding(padding), dilation, groups, cfg)
    y64 = shift_conv2d(x, w, b, stride, padding, dilation, groups, cfg)
    assert y64.shape == ref.shape
    assert torch.equal(y64, ref)  # float64: every product and partial sum is exact here
    yi = shift_conv2d_integer(x, w, b, stride, padding, dilation, groups, cfg)
    assert yi.dtype == torch.float64 and torch.equal(yi, ref)  # bit-exact
    # float32 tensors: the reference is the exact result for the float32-rounded operands
    x32, w32, b32 = x.float(), w.float(), None if b is None else b.float()
    ref32 = shift_reference(x32.double(), w32.double(), None if b is None else b32.double(), stride,
                            _torch_padding(padding), dilation, groups, cfg)
    yi32 = shift_conv2d_integer(x32, w32, b32, stride, padding, dilation, groups, cfg)
    assert yi32.dtype == torch.float32 and torch.equal(yi32, ref32.float())  # exact accumulator, one rounding
    y32 = shift_conv2d(x32, w32, b32, stride, padding, dilation, groups, cfg)
    torch.testing.assert_close(y32.double(), ref32, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("rounding, bits", [("round", 5), ("floor", 3)])
def test_shift_conv2d_other_formats_match_reference(rounding, bits):
    cfg = ShiftQuantConfig(weight_bits=bits, act_int_bits=4, act_frac_bits=3, act_rounding=rounding)
    x, w, b, stride, padding, dilation, groups = _case_tensors(CONV_CASES[3], seed=7)
    x = x * 4  # some inputs saturate at the 4-bit integer range
    ref = shift_reference(x, w, b, stride, _torch_padding(padding), dilation, groups, cfg)
    assert torch.equal(shift_conv2d(x, w, b, stride, padding, dilation, groups, cfg), ref)
    assert torch.equal(shift_conv2d_integer(x, w, b, stride, padding, dilation, groups, cfg), ref)


def test_shift_conv2d_without_input_quantisation_matches_reference():
    cfg = ShiftQuantConfig(quantize_input=False)
    x, w, b, stride, padding, dilation, groups = _case_tensors(CONV_CASES[2], seed=3)
    ref = shift_reference(x, w, b, stride, _torch_padding(padding), dilation, groups, cfg)
    y = shift_conv2d(x, w, b, stride, padding, dilation, groups, cfg)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="quantize_input=True"):
        shift_conv2d_integer(x, w, b, stride, padding, dilation, groups, cfg)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("padding, kernel, dilation", [("same", (3, 3), (1, 1)), ("same", (2, 4), (1, 1)),
                                                        ("same", (3, 2), (2, 3)), ("valid", (3, 3), (1, 1))])
def test_integer_path_string_padding(padding, kernel, dilation):
    cfg = ShiftQuantConfig()
    x, w = _rand(2, 3, 7, 8, scale=2.0, seed=4), _rand(4, 3, *kernel, scale=0.5, seed=5)
    y = shift_conv2d(x, w, None, 1, padding, dilation, 1, cfg)
    assert torch.equal(shift_conv2d_integer(x, w, None, 1, padding, dilation, 1, cfg), y)


def _is_power_of_two(value) -> bool:
    t = torch.as_tensor(value, dtype=torch.float64).abs()
    t = t[t != 0]
    return bool(torch.all(torch.frexp(t).mantissa == 0.5))


def test_integer_path_uses_no_multiplication():
    """The accumulator is built from shifts, negations and additions only: record every aten op. The only
    multiplications allowed are scalings by powers of two (the fixed-point scale 2^f, building the 2^p weight
    values, and the final binary-point move 2^(p_min - f)), never by weights or activations."""

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls: list[tuple[str, list]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            leaves = torch.utils._pytree.tree_leaves((args, kwargs))
            self.calls.append((func.overloadpacket.__name__, [a.clone() if isinstance(a, torch.Tensor) else a
                                                               for a in leaves]))
            return func(*args, **(kwargs or {}))

    x, w, b, stride, padding, dilation, groups = _case_tensors(CONV_CASES[0])
    with Recorder() as rec:
        y = shift_conv2d_integer(x, w, _rand(5, seed=9), stride, padding, dilation, groups, ShiftQuantConfig())
    names = [name for name, _ in rec.calls]
    assert names.count("bitwise_left_shift") >= 9  # one per kernel tap (3x3)
    forbidden = ("conv", "mm", "matmul", "einsum", "dot", "baddbmm", "addmv", "bmm", "div", "pow")
    assert not [n for n in names if any(k in n for k in forbidden)]
    muls = [(n, args) for n, args in rec.calls if n.startswith("mul")]
    assert muls, "expected the power-of-two scalings"
    for name, args in muls:
        operands = [a for a in args if isinstance(a, (torch.Tensor, float, int))]
        assert all(not isinstance(a, torch.Tensor) or a.is_floating_point() for a in operands), name
        assert any(_is_power_of_two(a) for a in operands), (name, operands)
    assert y.shape == (2, 5, 5, 4)


def test_integer_path_rejects_overflow_and_bad_shapes():
    cfg = ShiftQuantConfig(weight_bits=8, act_int_bits=24, act_frac_bits=29)
    x, w = torch.full((1, 64, 3, 3), 1e6, dtype=torch.float64), torch.full((2, 64, 3, 3), 1.0, dtype=torch.float64)
    w[0, 0, 0, 0] = 1e-30  # the smallest shift -> the largest P
    with pytest.raises(ValueError, match="overflow"):
        shift_conv2d_integer(x, w, None, config=cfg)
    with pytest.raises(ValueError, match="channel mismatch"):
        shift_conv2d_integer(torch.ones(1, 3, 4, 4), torch.ones(2, 4, 1, 1))
    with pytest.raises(ValueError, match="bias"):
        shift_conv2d_integer(torch.ones(1, 3, 4, 4), torch.ones(2, 3, 1, 1), torch.ones(3))
    with pytest.raises(ValueError, match="smaller than"):
        shift_conv2d_integer(torch.ones(1, 3, 2, 2), torch.ones(2, 3, 3, 3))
    with pytest.raises(ValueError, match="stride 1"):
        shift_conv2d_integer(torch.ones(1, 3, 6, 6), torch.ones(2, 3, 3, 3), None, 2, "same")


def test_weight_to_sign_shift_reconstructs_quantised_weight():
    cfg = ShiftQuantConfig(weight_bits=4)
    w = torch.cat([_rand(500, scale=0.2, seed=11), torch.tensor([0.0, 5.0, -1e-9])])
    sign, shift = weight_to_sign_shift(w, cfg)
    assert sign.dtype == torch.int8 and shift.dtype == torch.int64
    assert int(shift.min()) >= 0 and int(shift.max()) <= cfg.p_max - cfg.p_min
    rebuilt = sign.double() * torch.exp2((shift + cfg.p_min).double())
    assert torch.equal(rebuilt, round_weight_to_power_of_two(w, cfg))


# ------------------------------------------------------------------------------------------------- gradients


def test_shift_conv2d_gradient_is_ste_of_plain_conv():
    cfg = ShiftQuantConfig(act_int_bits=3, act_frac_bits=6)  # inputs beyond [-4, 4) saturate
    x = _rand(2, 4, 6, 6, scale=3.0, seed=21).requires_grad_()
    w = _rand(6, 2, 3, 3, scale=0.8, seed=22).requires_grad_()  # some |w| > 1 saturate
    b = _rand(6, scale=3.0, seed=23).requires_grad_()
    g = _rand(2, 6, 3, 3, seed=24)
    shift_conv2d(x, w, b, 2, 1, 1, 2, cfg).backward(g)
    xq = torch.from_numpy(np_input_q(x.detach().numpy(), cfg)).requires_grad_()
    wq = torch.from_numpy(np_weight_q(w.detach().numpy(), cfg)).requires_grad_()
    bq = torch.from_numpy(np_input_q(b.detach().numpy(), cfg)).requires_grad_()
    F.conv2d(xq, wq, bq, 2, 1, 1, 2).backward(g)
    x_mask = (x.detach() >= cfg.act_min) & (x.detach() <= cfg.act_max)
    b_mask = (b.detach() >= cfg.act_min) & (b.detach() <= cfg.act_max)
    w_mask = w.detach().abs() <= 1.0
    assert not x_mask.all() and not w_mask.all()  # the masks matter in this test
    torch.testing.assert_close(x.grad, xq.grad * x_mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.grad, wq.grad * w_mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, bq.grad * b_mask, rtol=1e-12, atol=1e-12)


def test_shift_linear_gradient_is_ste_of_plain_linear():
    cfg = ShiftQuantConfig()
    x = _rand(3, 5, scale=2.0, seed=31).requires_grad_()
    w = _rand(4, 5, scale=0.5, seed=32).requires_grad_()
    b = _rand(4, seed=33).requires_grad_()
    g = _rand(3, 4, seed=34)
    shift_linear(x, w, b, cfg).backward(g)
    xq = torch.from_numpy(np_input_q(x.detach().numpy(), cfg)).requires_grad_()
    wq = torch.from_numpy(np_weight_q(w.detach().numpy(), cfg)).requires_grad_()
    bq = torch.from_numpy(np_input_q(b.detach().numpy(), cfg)).requires_grad_()
    F.linear(xq, wq, bq).backward(g)
    w_mask = w.detach().abs() <= 1.0  # saturated weights get no gradient
    torch.testing.assert_close(x.grad, xq.grad)
    torch.testing.assert_close(w.grad, wq.grad * w_mask)
    torch.testing.assert_close(b.grad, bq.grad)


def test_gradcheck_wrt_input_and_bias_without_input_quantisation():
    cfg = ShiftQuantConfig(quantize_input=False)
    w = _rand(4, 2, 3, 3, scale=0.5, seed=41)
    x = _rand(1, 4, 4, 4, seed=42).requires_grad_()
    b = _rand(4, seed=43).requires_grad_()
    assert torch.autograd.gradcheck(lambda x_, b_: shift_conv2d(x_, w, b_, 2, 1, 1, 2, cfg), (x, b))
    wl = _rand(3, 5, scale=0.5, seed=44)
    xl = _rand(2, 5, seed=45).requires_grad_()
    assert torch.autograd.gradcheck(lambda x_: shift_linear(x_, wl, None, cfg), (xl,))


# ---------------------------------------------------------------------------------------------------- layers


def test_shift_conv2d_layer_matches_functional_and_reference():
    torch.manual_seed(0)
    layer = ShiftConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True, dtype=torch.float64, weight_bits=4,
                        act_int_bits=8, act_frac_bits=8, act_rounding="round")
    x = _rand(2, 4, 7, 7, scale=2.0, seed=51)
    cfg = layer.quant_config
    assert cfg == ShiftQuantConfig(4, 8, 8, "round", True)
    ref = shift_reference(x, layer.weight.detach(), layer.bias.detach(), (2, 2), (1, 1, 1, 1), (1, 1), 2, cfg)
    assert torch.equal(layer(x), ref)
    assert torch.equal(layer.integer_forward(x), ref)
    p2 = layer.power_of_two_weight()
    assert not p2.requires_grad and torch.equal(p2, round_weight_to_power_of_two(layer.weight.detach(), cfg))
    assert set(layer.state_dict()) == {"weight", "bias"}
    text = repr(layer)
    assert "weight_bits=4" in text and "act_frac_bits=8" in text and "'round'" in text


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_shift_conv2d_padding_modes(padding_mode):
    layer = ShiftConv2d(3, 4, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64)
    x = _rand(1, 3, 6, 5, seed=52)
    plain = nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode, dtype=torch.float64)
    cfg = layer.quant_config
    with torch.no_grad():
        plain.weight.copy_(round_weight_to_power_of_two(layer.weight, cfg))
        plain.bias.copy_(quantize_input_fixed_point(layer.bias, cfg))
    expected = plain(quantize_input_fixed_point(x, cfg))
    assert torch.equal(layer(x), expected)
    assert torch.equal(layer.integer_forward(x), expected)


def test_shift_linear_layer_matches_reference():
    layer = ShiftLinear(6, 5, dtype=torch.float64, weight_bits=6)
    x = _rand(2, 3, 6, scale=3.0, seed=61)
    cfg = layer.quant_config
    xq = np_input_q(x.numpy(), cfg)
    wq = np_weight_q(layer.weight.detach().numpy(), cfg)
    bq = np_input_q(layer.bias.detach().numpy(), cfg)
    ref = np.zeros((2, 3, 5))
    for i, j, o in itertools.product(range(2), range(3), range(5)):
        ref[i, j, o] = np.sum(xq[i, j] * wq[o]) + bq[o]
    ref_t = torch.from_numpy(ref)
    assert torch.equal(layer(x), ref_t)
    assert torch.equal(layer.integer_forward(x), ref_t)
    assert torch.equal(shift_linear_integer(x, layer.weight, None, cfg), ref_t - torch.from_numpy(bq))
    assert layer.integer_forward(x.float()).dtype == torch.float32
    assert "weight_bits=6" in repr(layer)
    with pytest.raises(ValueError, match="in_features"):
        layer.integer_forward(torch.ones(2, 5, dtype=torch.float64))


def test_from_float_copies_weights_and_settings():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, groups=2, bias=True, padding_mode="reflect").eval()
    before = copy.deepcopy(conv.state_dict())
    shift = ShiftConv2d.from_float(conv, weight_bits=3, act_rounding="round")
    assert type(shift) is ShiftConv2d and not shift.training
    assert (shift.stride, shift.padding, shift.groups, shift.padding_mode) == ((2, 2), (1, 1), 2, "reflect")
    assert shift.quant_config.weight_bits == 3 and shift.quant_config.act_rounding == "round"
    assert torch.equal(shift.weight, conv.weight) and shift.weight.data_ptr() != conv.weight.data_ptr()
    assert torch.equal(shift.bias, conv.bias)
    x = torch.randn(2, 4, 9, 9)
    xq = quantize_input_fixed_point(F.pad(x, (1, 1, 1, 1), mode="reflect"), shift.quant_config)
    expected = F.conv2d(xq, round_weight_to_power_of_two(conv.weight, shift.quant_config),
                        quantize_input_fixed_point(conv.bias, shift.quant_config), 2, 0, 1, 2)
    torch.testing.assert_close(shift(x), expected)
    assert all(torch.equal(v, conv.state_dict()[k]) for k, v in before.items())  # source untouched

    lin = nn.Linear(5, 3, bias=False)
    slin = ShiftLinear.from_float(lin, act_frac_bits=8)
    assert slin.bias is None and torch.equal(slin.weight, lin.weight) and slin.quant_config.act_frac_bits == 8

    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match="plain torch.nn.modules.conv.Conv2d"):
        ShiftConv2d.from_float(MyConv(2, 2, 1))
    with pytest.raises(TypeError, match="Linear"):
        ShiftLinear.from_float(nn.Conv2d(2, 2, 1))  # type: ignore[arg-type]


def test_layers_accept_device_dtype_and_state_dict_of_plain_layers():
    conv = ShiftConv2d(3, 4, 3, device="meta", dtype=torch.float16)
    assert conv.weight.device.type == "meta" and conv.weight.dtype == torch.float16
    lin = ShiftLinear(3, 4, device="cpu", dtype=torch.float64)
    assert lin.weight.dtype == torch.float64 and lin.bias.dtype == torch.float64
    plain = nn.Conv2d(3, 4, 3)
    layer = ShiftConv2d(3, 4, 3)
    layer.load_state_dict(plain.state_dict())
    assert torch.equal(layer.weight, plain.weight)
    bf = ShiftConv2d(3, 4, 3, padding=1, dtype=torch.bfloat16)
    y = bf(torch.randn(1, 3, 5, 5, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert torch.equal(copy.deepcopy(layer).weight, layer.weight)


def test_layers_reject_bad_quant_settings():
    with pytest.raises(ValueError, match="weight_bits"):
        ShiftConv2d(3, 4, 3, weight_bits=1)
    with pytest.raises(ValueError, match="act_rounding"):
        ShiftLinear(3, 4, act_rounding="nearest")
    with pytest.raises(TypeError):
        ShiftConv2d(3, 4, 3, 1, 0, 1, 1, True, "zeros", None, None, 5)  # quant settings are keyword-only


def test_layer_training_step_leaves_weight_float_and_updates_it():
    """One SGD step: the stored weight gets the STE gradient and is not snapped to powers of two."""
    torch.manual_seed(1)
    layer = ShiftConv2d(3, 4, 3, padding=1)
    w0 = layer.weight.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    layer(torch.randn(2, 3, 6, 6)).square().mean().backward()
    assert torch.equal(layer.weight.detach(), w0)  # forward/backward did not touch the stored weight
    opt.step()
    delta = layer.weight.detach() - w0
    assert torch.count_nonzero(delta) == delta.numel()
    mant, _ = torch.frexp(layer.weight.detach().abs())
    assert not torch.all(mant == 0.5)  # still ordinary floats


def test_conv_forward_hook_is_the_shift_conv():
    """mmcv's efficient conv-BN eval calls ``_conv_forward`` with a folded weight: it must stay a shift conv."""
    layer = ShiftConv2d(3, 4, 3, padding=1, dtype=torch.float64)
    x = _rand(1, 3, 5, 5, seed=71)
    folded = layer.weight.detach() * 0.37
    expected = shift_conv2d(x, folded, None, 1, 1, 1, 1, layer.quant_config)
    assert torch.equal(layer._conv_forward(x, folded, None), expected)
    assert not torch.equal(expected, F.conv2d(x, folded, None, 1, 1))
