"""AdderNet operator (docs/algorithms.md §2): forward / backward vs float64 naive loops, gradcheck, eager == compiled,
memory bound of the eager path, backend selection and the AdderConv2d layer.

Compilation is expensive (seconds per shape), so only the tests marked ``compiled`` compile, on two shapes
(``_COMPILED_SHAPES``); everything else uses the eager path or calls the (uncompiled) formulations directly.
"""
from __future__ import annotations

import math
import warnings
from typing import Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shiftaddaug_plugin.functional import _adder_kernels as K
from shiftaddaug_plugin.functional import _adder_native as native
from shiftaddaug_plugin.functional import adder as adder_mod
from shiftaddaug_plugin.functional.adder import adder_conv2d
from shiftaddaug_plugin.layers.adder import AdderConv2d

# (N, C, H, W, O, k, stride, padding, dilation, groups)
Shape = Tuple[int, int, int, int, int, int, int, int, int, int]
_SHAPES = [
    (2, 4, 7, 8, 6, 3, 1, 1, 1, 1),  # dense 3x3
    (2, 4, 7, 8, 6, 3, 2, 1, 1, 2),  # grouped, stride 2
    (2, 3, 8, 7, 3, 3, 2, 2, 2, 3),  # depthwise, stride 2, dilation 2
    (1, 3, 9, 9, 6, 3, 3, 0, 1, 3),  # depthwise with channel multiplier 2, stride 3, no padding
    (2, 5, 6, 5, 7, 1, 1, 0, 1, 1),  # pointwise
    (2, 4, 6, 6, 4, 1, 2, 1, 1, 1),  # pointwise, stride 2, padding
    (1, 2, 5, 9, 3, 2, 1, 1, 1, 1),  # even kernel
    (1, 2, 10, 10, 2, 3, 4, 1, 1, 1),  # stride larger than the kernel: some input positions get no gradient
    (3, 6, 2, 3, 5, 1, 1, 0, 1, 1),  # pointwise at 2x3 pixels (the channels-last ``rows`` kernels)
]
_COMPILED_SHAPES = [
    (2, 4, 7, 8, 6, 3, 2, 1, 1, 2),  # grouped dense, stride 2, padding
    (2, 6, 8, 8, 6, 3, 1, 2, 2, 6),  # depthwise, dilation 2
]


def _ids(shape: Shape) -> str:
    n, c, h, w, o, k, s, p, d, g = shape
    return f"N{n}C{c}{h}x{w}O{o}k{k}s{s}p{p}d{d}g{g}"


def _tensors(shape: Shape, dtype: torch.dtype = torch.float32, seed: int = 0):
    n, c, h, w, o, k, s, p, d, g = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    wt = torch.randn(o, c // g, k, k, generator=gen, dtype=torch.float64).to(dtype)
    return x, wt


def _out_hw(shape: Shape) -> Tuple[int, int]:
    n, c, h, w, o, k, s, p, d, g = shape
    return (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1


# ------------------------------------------------------------------------------------------------------------
# independent float64 naive-loop references (explicit loops over output channels, taps and positions)
# ------------------------------------------------------------------------------------------------------------
def _ref_forward(x, wt, s, p, d, g):
    x, wt = x.double(), wt.double()
    n, c, h, w = x.shape
    o, cg, kh, kw = wt.shape
    og = o // g
    xp = F.pad(x, (p, p, p, p))
    ho, wo = (h + 2 * p - d * (kh - 1) - 1) // s + 1, (w + 2 * p - d * (kw - 1) - 1) // s + 1
    y = torch.zeros(n, o, ho, wo, dtype=torch.float64)
    for oc in range(o):
        c0 = (oc // og) * cg
        for a in range(ho):
            for b in range(wo):
                total = torch.zeros(n, dtype=torch.float64)
                for ci in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            total += (xp[:, c0 + ci, a * s + i * d, b * s + j * d] - wt[oc, ci, i, j]).abs()
                y[:, oc, a, b] = -total
    return y


def _ref_backward(x, wt, grad, s, p, d, g, eta, exact=False, scale=True):
    """AdderNet gradients: dW = sum g (X - W) then adaptive scaling; dX = sum g HardTanh(W - X) (exact: signs)."""
    x, wt, grad = x.double(), wt.double(), grad.double()
    n, c, h, w = x.shape
    o, cg, kh, kw = wt.shape
    og = o // g
    xp = F.pad(x, (p, p, p, p))
    dxp = torch.zeros_like(xp)
    dw = torch.zeros_like(wt)
    ho, wo = grad.shape[2:]
    for oc in range(o):
        c0 = (oc // og) * cg
        for a in range(ho):
            for b in range(wo):
                gv = grad[:, oc, a, b]
                for ci in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            r, q = a * s + i * d, b * s + j * d
                            diff = xp[:, c0 + ci, r, q] - wt[oc, ci, i, j]
                            dw[oc, ci, i, j] += (gv * (diff.sign() if exact else diff)).sum()
                            dxp[:, c0 + ci, r, q] += gv * ((-diff).sign() if exact else (-diff).clamp(-1, 1))
    if scale and not exact:
        dw = dw * (eta * math.sqrt(dw.numel()) / max(dw.norm().item(), 1e-12))
    return dxp[:, :, p:p + h, p:p + w], dw


def _run(x, wt, shape, grad, backend, eta=0.2, grad_mode="spec"):
    n, c, h, w, o, k, s, p, d, g = shape
    xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
    y = adder_conv2d(xr, wr, s, p, d, g, eta, grad_mode=grad_mode, backend=backend)
    y.backward(grad)
    return y.detach(), xr.grad, wr.grad


# ------------------------------------------------------------------------------------------------------------
# numerics (eager path and uncompiled formulations)
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", _SHAPES, ids=_ids)
def test_forward_matches_naive_reference(shape: Shape) -> None:
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape)
    ref = _ref_forward(x, wt, s, p, d, g)
    y = adder_conv2d(x, wt, s, p, d, g, backend="eager")
    assert y.shape == ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-5)
    # the formulations the compiled path compiles, run uncompiled
    xp = F.pad(x, (p, p, p, p))
    pointwise = k == 1 and g == 1
    for fn in (K.forward_taps, K.forward_patch, K.forward_tapwise) + ((K.forward_rows,) if pointwise else ()):
        out = fn(xp, wt, (s, s), (d, d), g, _out_hw(shape))
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape", _SHAPES, ids=_ids)
def test_backward_matches_naive_reference(shape: Shape) -> None:
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=1)
    grad = torch.randn(n, o, *_out_hw(shape), generator=torch.Generator().manual_seed(2))
    eta = 0.37
    ref_dx, ref_dw = _ref_backward(x, wt, grad, s, p, d, g, eta)
    _, dx, dw = _run(x, wt, shape, grad, "eager", eta=eta)
    torch.testing.assert_close(dx.double(), ref_dx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), ref_dw, rtol=1e-5, atol=1e-5)
    # adaptive scaling: ||dW|| = eta * sqrt(numel(W))
    assert dw.norm().item() == pytest.approx(eta * math.sqrt(wt.numel()), rel=1e-5)
    # the compiled dX formulation, run uncompiled, in both modes
    for exact in (False, True):
        rdx = _ref_backward(x, wt, grad, s, p, d, g, eta, exact=True)[0] if exact else ref_dx
        rows = (K.input_grad_rows,) if (k, s, p, g) == (1, 1, 0, 1) else ()
        for fn in (K.input_grad_gather, K.input_grad_tapwise) + rows:
            out = fn(x, wt, grad, (s, s), (p, p), (d, d), g, exact)
            torch.testing.assert_close(out.double(), rdx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [_SHAPES[1], _SHAPES[2], (2, 5, 2, 1, 5, 3, 1, 1, 1, 5)], ids=_ids)
def test_weight_grad_is_conv_weight_grad_minus_rank_one_term(shape: Shape) -> None:
    """docs/algorithms.md §2: sum g (X - W) == conv2d_weight(X, g) - W * sum g, exactly (before scaling); the
    per-tap depthwise formulation gives the same."""
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, torch.float64, seed=3)
    grad = torch.randn(n, o, *_out_hw(shape), dtype=torch.float64)
    _, ref_raw = _ref_backward(x, wt, grad, s, p, d, g, eta=1.0, scale=False)
    fns = [K.weight_grad_conv] + ([K.weight_grad_depthwise_taps] if c == o == g else [])
    for fn in fns:
        torch.testing.assert_close(fn(x, wt, grad, (s, s), (p, p), (d, d), g), ref_raw, rtol=1e-10, atol=1e-10)


def test_small_depthwise_layers_compile_their_weight_grad(monkeypatch) -> None:
    few = K.AdderGeometry(64, 336, 1, 1, 336, 3, 3, (1, 1), (1, 1), (1, 1), 336)
    many = K.AdderGeometry(64, 96, 4, 4, 96, 3, 3, (1, 1), (1, 1), (1, 1), 96)
    multiplier = K.AdderGeometry(2, 3, 2, 2, 6, 3, 3, (1, 1), (1, 1), (1, 1), 3)
    assert adder_mod.uses_depthwise_weight_grad_taps(few)
    assert not adder_mod.uses_depthwise_weight_grad_taps(many)
    assert not adder_mod.uses_depthwise_weight_grad_taps(multiplier)
    shape = (3, 4, 3, 2, 4, 3, 1, 1, 1, 4)  # depthwise, 3x2 output pixels: the compiled per-tap dW
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=11)
    grad = torch.randn(n, o, *_out_hw(shape), generator=torch.Generator().manual_seed(12))
    calls = []
    real = adder_mod._call_compiled
    monkeypatch.setattr(adder_mod, "_call_compiled", lambda name, *a: calls.append(name) or real(name, *a))
    _, _, dw = _run(x, wt, shape, grad, "compiled", eta=0.3)
    assert "dw_weight_grad" in calls
    torch.testing.assert_close(dw.double(), _ref_backward(x, wt, grad, s, p, d, g, 0.3)[1], rtol=1e-5, atol=1e-5)


def test_training_and_no_grad_calls_share_one_compiled_kernel() -> None:
    """The kernels get detached tensors, so a layer shape met in training (Parameter weight, input that requires
    grad) and again under ``torch.no_grad`` (evaluation, BN recalibration) compiles once, not twice."""
    from torch._dynamo.utils import counters

    gen = torch.Generator().manual_seed(21)
    x = torch.randn(2, 5, 3, 3, generator=gen)
    weight = torch.nn.Parameter(torch.randn(7, 5, 1, 1, generator=gen))
    before = counters["stats"]["unique_graphs"]
    adder_conv2d(x.clone().requires_grad_(), weight, backend="compiled").sum().backward()
    after_training = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        y = adder_conv2d(x, weight, backend="compiled")
    assert after_training > before  # the forward (and dX) kernels were compiled here
    assert counters["stats"]["unique_graphs"] == after_training
    torch.testing.assert_close(y, -(x[:, None] - weight[None, :, :, 0, 0, None, None]).abs().sum(2))


def _away_from_ties(shape: Shape, seed: int):
    """x on 0.1*Z + 0.075, w on 0.1*Z + 0.025: |x - w| >= 0.05 and |0 - w| >= 0.025 (zero padding) everywhere."""
    n, c, h, w, o, k, s, p, d, g = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-10, 10, (n, c, h, w), generator=gen).double() * 0.1 + 0.075
    wt = torch.randint(-10, 10, (o, c // g, k, k), generator=gen).double() * 0.1 + 0.025
    return x.requires_grad_(), wt.requires_grad_()


@pytest.mark.parametrize("shape", [_SHAPES[1], _SHAPES[2], _SHAPES[5], _SHAPES[7]], ids=_ids)
def test_gradcheck_exact_mode(shape: Shape) -> None:
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _away_from_ties(shape, seed=4)

    def fn(xx, ww):
        return adder_conv2d(xx, ww, s, p, d, g, grad_mode="exact", backend="eager")

    assert torch.autograd.gradcheck(fn, (x, wt), eps=1e-6, atol=1e-6)


def test_spec_and_exact_modes_differ_as_specified() -> None:
    """Spec dX is HardTanh, not sign: the two modes must disagree where |W - X| < 1 (the test can fail)."""
    shape = _SHAPES[0]
    x, wt = _tensors(shape)
    x = x * 0.1
    grad = torch.ones(shape[0], shape[4], *_out_hw(shape))
    _, dx_spec, _ = _run(x, wt, shape, grad, "eager")
    _, dx_exact, _ = _run(x, wt, shape, grad, "eager", grad_mode="exact")
    assert not torch.allclose(dx_spec, dx_exact)


def test_half_inputs_are_summed_in_float32() -> None:
    shape = _SHAPES[0]
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=5)
    xb, wb = x.bfloat16().requires_grad_(), wt.bfloat16().requires_grad_()
    y = adder_conv2d(xb, wb, s, p, d, g, backend="eager")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _ref_forward(xb.float(), wb.float(), s, p, d, g), rtol=1e-6, atol=1e-5)
    y.sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y2 = adder_conv2d(x, wt, s, p, d, g, backend="eager")
    assert y2.dtype == torch.float32


# ------------------------------------------------------------------------------------------------------------
# eager path memory bound
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,groups,og,cg,positions,itemsize,budget", [
    (64, 1, 96, 32, 1024, 4, 64 * 2**20),
    (64, 192, 1, 1, 1024, 4, 64 * 2**20),
    (3, 2, 7, 5, 11, 8, 1000),
    (1, 1, 1, 1, 10**6, 4, 1024),  # even the minimal chunk exceeds the budget
    (8, 4, 16, 16, 64, 4, 4096),
])
def test_chunk_planner_respects_budget(n, groups, og, cg, positions, itemsize, budget) -> None:
    plan = K.plan_chunks(n, groups, og, cg, positions, itemsize, budget)
    assert 1 <= plan.batch <= n and 1 <= plan.out_channels <= og and 1 <= plan.in_channels <= cg
    assert plan.bytes_per_chunk == plan.batch * plan.out_channels * plan.in_channels * groups * positions * itemsize
    minimal = groups * positions * itemsize
    if minimal <= budget:
        assert plan.bytes_per_chunk <= budget
    else:
        assert (plan.batch, plan.out_channels, plan.in_channels) == (1, 1, 1)
    # maximal: growing any axis that can still grow (in the planner's order) would break the budget
    if plan.in_channels < cg:
        assert (plan.in_channels + 1) * minimal > budget


def _peak_extra_bytes(fn) -> int:
    """Peak live bytes of the c10 CPU allocator during fn(), from the profiler's [memory] events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def test_eager_path_intermediates_stay_within_budget(monkeypatch) -> None:
    shape = (2, 16, 8, 8, 16, 3, 1, 1, 1, 1)
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape)
    budget = 16 * 1024
    monkeypatch.setattr(adder_mod, "EAGER_CHUNK_BYTES", budget)
    monkeypatch.delenv(adder_mod.CHUNK_MB_ENV, raising=False)
    xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
    grad = torch.randn(n, o, h, w)

    def step():
        y = adder_conv2d(xr, wr, s, p, d, g, backend="eager")
        y.backward(grad)

    step()
    peak = _peak_extra_bytes(step)
    naive = n * o * c * h * w * 4  # one tap's full broadcast; the unfold formulation would be 9x this
    io = 4 * (x.numel() + F.pad(x, (1, 1, 1, 1)).numel() + grad.numel() * 2 + wt.numel() * 4)
    assert peak <= io + 3 * budget, (peak, io, budget)
    assert peak < naive
    torch.testing.assert_close(xr.grad.double(), _ref_backward(x, wt, grad, s, p, d, g, 0.2)[0] * 2,
                               rtol=1e-5, atol=1e-5)  # two steps accumulated


# ------------------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------------------
def test_backend_selection_and_validation(monkeypatch) -> None:
    monkeypatch.setenv(adder_mod.BACKEND_ENV, "eager")
    assert adder_mod.resolve_backend() == "eager"
    assert adder_mod.resolve_backend("compiled") == "compiled"
    monkeypatch.setenv(adder_mod.BACKEND_ENV, "cuda-magic")
    with pytest.raises(ValueError, match=adder_mod.BACKEND_ENV):
        adder_mod.resolve_backend()
    x, wt = _tensors(_SHAPES[0])
    with pytest.raises(ValueError, match="backend"):
        adder_conv2d(x, wt, backend="fast")
    monkeypatch.setenv(adder_mod.BACKEND_ENV, "auto")
    assert adder_mod.resolve_backend() == "native"  # CPU: the native kernels build on this machine
    monkeypatch.setattr(native, "_auto_failure", "simulated")
    assert adder_mod.resolve_backend() == "compiled"
    monkeypatch.setattr(adder_mod, "_compile_failure", "simulated")
    assert adder_mod.resolve_backend() == "eager"
    assert adder_mod.resolve_backend("compiled") == "compiled"


def test_eager_adders_forces_eager_inside_the_block_only(monkeypatch) -> None:
    monkeypatch.setenv(adder_mod.BACKEND_ENV, "compiled")
    with adder_mod.eager_adders():
        assert adder_mod.resolve_backend() == "eager" and adder_mod.resolve_backend("compiled") == "eager"
        with adder_mod.eager_adders():
            pass
        assert adder_mod.resolve_backend() == "eager"  # a nested block restores what it found
    assert adder_mod.resolve_backend() == "compiled"
    with pytest.raises(KeyError), adder_mod.eager_adders():
        raise KeyError("restored on errors too")
    assert adder_mod.resolve_backend() == "compiled"


def test_auto_backend_falls_back_to_eager_once_when_compile_fails(monkeypatch) -> None:
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler (simulated)")

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(adder_mod, "_compiled_fns", {})
    monkeypatch.setattr(adder_mod, "_autotune_cache", {})
    monkeypatch.setattr(adder_mod, "_compile_failure", None)
    monkeypatch.setattr(native, "_auto_failure", "simulated")  # as on a machine without a C compiler
    shape = _SHAPES[0]
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape)
    with pytest.raises(RuntimeError, match="backend='eager'"):
        adder_conv2d(x, wt, s, p, d, g, backend="compiled")
    with pytest.warns(RuntimeWarning, match="simulated"):
        y = adder_conv2d(x, wt, s, p, d, g, backend="auto")
    torch.testing.assert_close(y.double(), _ref_forward(x, wt, s, p, d, g), rtol=1e-6, atol=1e-5)
    assert adder_mod.resolve_backend("auto") == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        adder_conv2d(x, wt, s, p, d, g, backend="auto")


@pytest.mark.parametrize("shape,fused", [(_COMPILED_SHAPES[0], True), (_COMPILED_SHAPES[0], False),
                                         (_COMPILED_SHAPES[1], True)], ids=["dense-fused", "dense-tapwise", "dw"])
def test_compiled_path_matches_eager_path(shape: Shape, fused: bool, monkeypatch) -> None:
    monkeypatch.setenv(adder_mod.AUTOTUNE_ENV, "0")
    monkeypatch.setattr(adder_mod, "_autotune_cache", {})
    if not fused:  # no fused candidate fits: the per-tap kernels run
        monkeypatch.setattr(adder_mod, "FUSED_BYTES_LIMIT", 0)
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=6)
    grad = torch.randn(n, o, *_out_hw(shape), generator=torch.Generator().manual_seed(7))
    y_c, dx_c, dw_c = _run(x, wt, shape, grad, "compiled")
    y_e, dx_e, dw_e = _run(x, wt, shape, grad, "eager")
    torch.testing.assert_close(y_c, y_e, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(dx_c, dx_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw_c, dw_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_c.double(), _ref_forward(x, wt, s, p, d, g), rtol=1e-6, atol=1e-5)
    expected = {"taps", "gather"} if fused else {"tapwise"}
    assert set(adder_mod.autotune_choices().values()) == expected


def test_candidates_respect_fused_memory_limit() -> None:
    dense = K.AdderGeometry(64, 64, 32, 32, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1)  # 9 x 16 MiB buffers
    small = K.AdderGeometry(2, 4, 8, 8, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    dw = K.AdderGeometry(64, 192, 32, 32, 192, 3, 3, (1, 1), (1, 1), (1, 1), 192)
    assert adder_mod.forward_candidates(dense) == ["tapwise"]
    assert adder_mod.input_grad_candidates(dense) == ["tapwise"]
    assert adder_mod.forward_candidates(small) == ["taps", "tapwise"]
    assert adder_mod.input_grad_candidates(small) == ["gather", "tapwise"]
    assert adder_mod.forward_candidates(dw) == ["taps"] and adder_mod.input_grad_candidates(dw) == ["gather"]


def test_small_pointwise_layers_use_the_rows_kernels() -> None:
    few = K.AdderGeometry(64, 32, 2, 2, 192, 1, 1, (1, 1), (0, 0), (1, 1), 1)  # 4 pixels < SMALL_SPATIAL
    many = K.AdderGeometry(64, 32, 4, 4, 192, 1, 1, (1, 1), (0, 0), (1, 1), 1)  # 16 pixels
    strided = K.AdderGeometry(64, 32, 4, 4, 192, 1, 1, (2, 2), (0, 0), (1, 1), 1)  # 2x2 out of 4x4 in
    grouped = K.AdderGeometry(64, 32, 2, 2, 192, 1, 1, (1, 1), (0, 0), (1, 1), 2)
    assert adder_mod.forward_candidates(few) == ["rows"] and adder_mod.input_grad_candidates(few) == ["rows_dx"]
    assert adder_mod.forward_candidates(many) == ["taps"] and adder_mod.input_grad_candidates(many) == ["gather"]
    assert adder_mod.forward_candidates(strided) == ["rows"]  # output pixels decide the forward
    assert adder_mod.input_grad_candidates(strided) == ["gather"]  # rows dX needs stride 1
    assert adder_mod.forward_candidates(grouped) == ["taps"] and adder_mod.input_grad_candidates(grouped) == ["gather"]


def test_compiled_rows_kernels_match_the_naive_reference(monkeypatch) -> None:
    monkeypatch.setattr(adder_mod, "_autotune_cache", {})
    shape = _SHAPES[-1]
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=9)
    grad = torch.randn(n, o, *_out_hw(shape), generator=torch.Generator().manual_seed(10))
    y, dx, dw = _run(x, wt, shape, grad, "compiled", eta=0.3)
    ref_dx, ref_dw = _ref_backward(x, wt, grad, s, p, d, g, 0.3)
    torch.testing.assert_close(y.double(), _ref_forward(x, wt, s, p, d, g), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(dx.double(), ref_dx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), ref_dw, rtol=1e-5, atol=1e-5)
    assert set(adder_mod.autotune_choices().values()) == {"rows", "rows_dx"}


def test_autotuner_times_once_and_caches_its_choice(monkeypatch) -> None:
    monkeypatch.setenv(adder_mod.AUTOTUNE_ENV, "1")
    monkeypatch.setattr(adder_mod, "_autotune_cache", {})
    shape = _COMPILED_SHAPES[0]
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt = _tensors(shape, seed=8)
    calls = []
    real = adder_mod._call_compiled

    def counting(name, fn, args, backend):
        calls.append(name)
        return real(name, fn, args, backend)

    monkeypatch.setattr(adder_mod, "_call_compiled", counting)
    y1 = adder_conv2d(x, wt, s, p, d, g, backend="compiled")
    choices = adder_mod.autotune_choices()
    assert len(choices) == 1 and set(choices.values()) <= {"taps", "tapwise"}
    assert set(calls) == {"taps", "forward_tap"}  # both candidates were timed (tapwise: one call per tap)
    runs = 1 + adder_mod.AUTOTUNE_ROUNDS  # compile / warm-up + timed rounds
    assert calls.count("taps") == runs and calls.count("forward_tap") == runs * k * k
    calls.clear()
    y2 = adder_conv2d(x, wt, s, p, d, g, backend="compiled")
    chosen = next(iter(choices.values()))
    assert calls == (["taps"] if chosen == "taps" else ["forward_tap"] * k * k)  # cached: no timing
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(y1.double(), _ref_forward(x, wt, s, p, d, g), rtol=1e-6, atol=1e-5)


def test_recompile_limit_is_raised_on_first_compiled_use() -> None:
    import torch._dynamo.config as dynamo_config

    adder_mod._raise_recompile_limits()
    assert dynamo_config.recompile_limit >= adder_mod.RECOMPILE_LIMIT
    assert dynamo_config.accumulated_recompile_limit >= adder_mod.ACCUMULATED_RECOMPILE_LIMIT


# ------------------------------------------------------------------------------------------------------------
# argument validation
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.randn(4, 5, 5), weight=torch.randn(2, 4, 3, 3)), ValueError, "4-D"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(2, 3, 3, 3)), ValueError, "input channels"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(3, 2, 3, 3), groups=2), ValueError, "divisible"),
    (dict(x=torch.randn(1, 4, 2, 2), weight=torch.randn(2, 4, 3, 3)), ValueError, "smaller than"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(2, 4, 3, 3), stride=0), ValueError, "stride"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(2, 4, 3, 3), padding="same"), TypeError, "AdderConv2d"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(2, 4, 3, 3), eta=0.0), ValueError, "eta"),
    (dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(2, 4, 3, 3), grad_mode="sign"), ValueError, "grad_mode"),
    (dict(x=torch.ones(1, 4, 5, 5, dtype=torch.long), weight=torch.randn(2, 4, 3, 3)), TypeError, "floating"),
])
def test_invalid_arguments_raise_actionable_errors(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        adder_conv2d(**kwargs, backend="eager")


# ------------------------------------------------------------------------------------------------------------
# AdderConv2d layer
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def eager_backend(monkeypatch):
    monkeypatch.setenv(adder_mod.BACKEND_ENV, "eager")


def test_layer_forward_bias_and_state_dict(eager_backend) -> None:
    torch.manual_seed(0)
    layer = AdderConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True, eta=0.5)
    x = torch.randn(2, 4, 7, 8)
    y = layer(x)
    assert y.shape == (2, 6, 4, 4)
    ref = _ref_forward(x, layer.weight.detach(), 2, 1, 1, 2) + layer.bias.detach().double().view(1, -1, 1, 1)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-5)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    assert list(layer.state_dict()) == list(conv.state_dict()) == ["weight", "bias"]
    assert AdderConv2d(4, 6, 3).bias is None  # bias defaults to False
    assert "eta=0.5" in repr(layer) and "stride=(2, 2)" in repr(layer)
    y.sum().backward()
    assert layer.weight.grad.norm().item() == pytest.approx(0.5 * math.sqrt(layer.weight.numel()), rel=1e-5)
    torch.testing.assert_close(layer.bias.grad, torch.full((6,), 2.0 * 16))


def test_layer_from_float_and_factory_kwargs(eager_backend) -> None:
    conv = nn.Conv2d(3, 5, (3, 1), stride=(1, 2), padding=(1, 0), dilation=(2, 1), bias=True, dtype=torch.float64)
    layer = AdderConv2d.from_float(conv, eta=0.3)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 1), (1, 2), (1, 0), (2, 1))
    assert layer.eta == 0.3 and layer.weight.dtype == torch.float64
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight.data_ptr() != conv.weight.data_ptr()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    y = layer(x)
    assert y.shape == conv(x).shape and y.dtype == torch.float64
    meta = AdderConv2d(4, 8, 1, device="meta", dtype=torch.float16)
    assert meta.weight.device.type == "meta" and meta.weight.dtype == torch.float16
    with pytest.raises(TypeError, match="plain torch.nn.Conv2d"):
        AdderConv2d.from_float(nn.Linear(3, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta"):
        AdderConv2d(3, 4, 3, eta=-1.0)


def test_layer_same_padding_and_padding_modes(eager_backend) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 2, 6, 5)
    same = AdderConv2d(2, 3, 4, padding="same")  # even kernel: asymmetric padding
    assert same(x).shape == (1, 3, 6, 5)
    reflect = AdderConv2d(2, 3, 3, padding=1, padding_mode="reflect")
    manual = adder_conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), reflect.weight)
    torch.testing.assert_close(reflect(x), manual)
    zeros = AdderConv2d(2, 3, 3, padding=1)
    zeros.load_state_dict(reflect.state_dict())
    assert not torch.allclose(zeros(x), reflect(x))
