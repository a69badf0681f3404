"""The ``native`` adder backend (functional/_adder_native.py, native/adder.c): numerics against an independent
float64 unfold/fold reference for every layout the kernels choose, gradcheck, thread invariance, the on-disk build
cache and the errors / fallback when no C compiler is found."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch
import torch.nn.functional as F

from shiftaddaug_plugin.functional import _adder_native as native
from shiftaddaug_plugin.functional import adder as adder_mod
from shiftaddaug_plugin.functional._adder_args import geometry
from shiftaddaug_plugin.functional.adder import adder_conv2d

REPO = Path(__file__).resolve().parents[1]

# (N, C, H, W, O, k, stride, padding, dilation, groups)
Shape = Tuple[int, int, int, int, int, int, int, int, int, int]
SHAPES = [
    (2, 4, 7, 8, 6, 3, 1, 1, 1, 1),      # dense 3x3 (channels-last, output tile remainder)
    (2, 4, 7, 8, 6, 3, 2, 1, 1, 2),      # grouped, stride 2
    (1, 6, 5, 5, 70, 3, 1, 1, 1, 1),     # more output channels than one tile (32) holds
    (2, 5, 6, 5, 64, 1, 1, 0, 1, 1),     # pointwise, two full tiles
    (2, 4, 6, 6, 4, 1, 2, 1, 1, 1),      # pointwise, stride 2, padding
    (1, 2, 5, 9, 3, 2, 1, 1, 1, 1),      # even kernel
    (1, 2, 10, 10, 2, 3, 4, 1, 1, 1),    # stride larger than the kernel
    (1, 3, 9, 9, 6, 3, 3, 0, 1, 3),      # depthwise with channel multiplier 2 (general kernel)
    (2, 12, 5, 6, 40, 3, 1, 1, 1, 1),    # 12 input channels: dX vectorised over channels; tiles of 32 + 8
    (1, 16, 4, 4, 22, 1, 1, 0, 1, 2),    # grouped, 8 input channels per group (dX over channels), tiles 8 + 3
    (2, 9, 4, 4, 16, 3, 2, 1, 1, 1),     # one tile of 16, stride 2, dX over channels
    (2, 5, 4, 20, 5, 3, 1, 1, 1, 5),     # depthwise, stride 1, rows of 20 >= WIDE_ROW: channels-first
    (2, 3, 6, 24, 3, 5, 1, 4, 2, 3),     # depthwise, channels-first, dilation 2
    (1, 2, 5, 17, 2, 3, 1, 3, 1, 2),     # depthwise, channels-first, padding wider than the kernel reaches
    (2, 3, 8, 7, 3, 3, 2, 2, 2, 3),      # depthwise, stride 2, dilation 2: channels-last
    (2, 3, 33, 34, 3, 3, 2, 1, 1, 3),    # depthwise, stride 2, rows of 17: phase planes, odd height
    (1, 2, 9, 40, 2, 5, 2, 3, 2, 2),     # depthwise, phase planes, stride 2, dilation 2, wide padding
    (1, 2, 7, 50, 2, 3, 3, 0, 1, 2),     # depthwise, phase planes, stride 3 (width not a multiple of 3)
    (1, 2, 6, 41, 2, 2, 2, 0, 1, 2),     # depthwise, phase planes, even kernel
    (3, 7, 3, 2, 7, 3, 1, 1, 1, 7),      # depthwise on a 3x2 map: channels-last, native dW
]


def _ids(shape: Shape) -> str:
    n, c, h, w, o, k, s, p, d, g = shape
    return f"N{n}C{c}{h}x{w}O{o}k{k}s{s}p{p}d{d}g{g}"


def _tensors(shape: Shape, dtype: torch.dtype, seed: int = 0):
    n, c, h, w, o, k, s, p, d, g = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(o, c // g, k, k, generator=gen, dtype=torch.float64)
    ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    grad = torch.randn(n, o, ho, wo, generator=gen, dtype=torch.float64)
    return x.to(dtype), wt.to(dtype), grad.to(dtype)


def _reference(x, wt, grad, shape: Shape, exact: bool):
    """float64 unfold/fold: columns X[n, (c, k), l] per group; Y = -sum |X - W|, dX = fold(sum_o g phi(W - X)),
    raw dW = sum g (X - W) (zero padding included as x = 0, so it is part of the columns)."""
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt, grad = x.double(), wt.double(), grad.double()
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)            # (N, C*k*k, L)
    cg, og = c // g, o // g
    cols = cols.reshape(n, g, 1, cg * k * k, -1)
    wg = wt.reshape(1, g, og, cg * k * k, 1)
    diff = cols - wg                                                   # (N, G, OG, CKK, L)
    y = -diff.abs().sum(3).reshape(n, o, *grad.shape[2:])
    gg = grad.reshape(n, g, og, 1, -1)
    phi = (-diff).sign() if exact else (-diff).clamp(-1, 1)
    dcols = (gg * phi).sum(2).reshape(n, c * k * k, -1)
    dx = F.fold(dcols, (h, w), k, dilation=d, padding=p, stride=s)
    dw_raw = (gg * diff).sum((0, 4)).reshape(o, cg, k, k)
    return y, dx, dw_raw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_native_matches_unfold_reference(shape: Shape, dtype: torch.dtype) -> None:
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt, grad = _tensors(shape, dtype)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for exact in (False, True):
        ref_y, ref_dx, ref_dw = _reference(x, wt, grad, shape, exact)
        xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
        y = adder_conv2d(xr, wr, s, p, d, g, eta=0.3, grad_mode="exact" if exact else "spec", backend="native")
        y.backward(grad)
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), ref_y, **tol)
        torch.testing.assert_close(xr.grad.double(), ref_dx, **tol)
        if not exact:  # spec: the raw dW rescaled to norm eta * sqrt(numel) (AdderNet eq. 13)
            scaled = ref_dw * (0.3 * math.sqrt(ref_dw.numel()) / ref_dw.norm())
            torch.testing.assert_close(wr.grad.double(), scaled, **tol)


def test_shapes_cover_every_kernel_layout() -> None:
    """The table above must reach every code path (else a layout rule change would leave one untested)."""
    seen = set()
    for shape in SHAPES:
        n, c, h, w, o, k, s, p, d, g = shape
        x, wt, _ = _tensors(shape, torch.float32)
        geom = geometry(x, wt, s, p, d, g)
        if not native.is_depthwise(geom):
            seen.add("general")
            seen.add("dx-channels" if geom.cg >= native.CHANNEL_VECTOR else "dx-reduction")
        else:
            if native.depthwise_channels_last(geom):
                seen.add("dw-last")
            else:
                seen.add("dw-first" if geom.stride == (1, 1) else "dw-phases")
            if adder_mod.uses_depthwise_weight_grad_taps(geom):
                seen.add("dw-weight-grad")
    assert seen == {"general", "dx-channels", "dx-reduction", "dw-last", "dw-first", "dw-phases",
                    "dw-weight-grad"}


def test_depthwise_weight_grad_kernel_is_the_raw_sum() -> None:
    shape = SHAPES[-1]
    assert shape[5:8] == (3, 1, 1) and shape[2] * shape[3] < 16  # depthwise on a few-pixel map
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt, grad = _tensors(shape, torch.float64, seed=3)
    geom = geometry(x, wt, s, p, d, g)
    torch.testing.assert_close(native.weight_grad_depthwise(x, wt, grad, geom),
                               _reference(x, wt, grad, shape, False)[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[9], SHAPES[11], SHAPES[14], SHAPES[17]], ids=_ids)
def test_gradcheck_exact_mode(shape: Shape) -> None:
    n, c, h, w, o, k, s, p, d, g = shape
    gen = torch.Generator().manual_seed(4)  # on 0.1*Z + offsets: |x - w| >= 0.05, |w| >= 0.025 (away from ties)
    x = (torch.randint(-10, 10, (n, c, h, w), generator=gen).double() * 0.1 + 0.075).requires_grad_()
    wt = (torch.randint(-10, 10, (o, c // g, k, k), generator=gen).double() * 0.1 + 0.025).requires_grad_()

    def fn(xx, ww):
        return adder_conv2d(xx, ww, s, p, d, g, grad_mode="exact", backend="native")

    assert torch.autograd.gradcheck(fn, (x, wt), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[11], SHAPES[15], SHAPES[-1]], ids=_ids)
def test_non_contiguous_inputs(shape: Shape) -> None:
    """Channels-last inputs and a transposed (non-contiguous) upstream gradient give the reference results: the
    kernels must read contiguous copies that stay alive for the whole call."""
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt, grad = _tensors(shape, torch.float64, seed=6)
    ref_y, ref_dx, _ = _reference(x, wt, grad, shape, False)
    xr = x.to(memory_format=torch.channels_last).requires_grad_()
    y = adder_conv2d(xr, wt, s, p, d, g, backend="native")
    y.backward(grad.transpose(2, 3).contiguous().transpose(2, 3))
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xr.grad, ref_dx, rtol=1e-10, atol=1e-10)


def test_results_do_not_depend_on_the_thread_count() -> None:
    """Every output element of a native kernel is summed by one thread in a fixed order: 1 and 2 threads agree bit
    for bit (Y, dX, and dW where the native kernel computes it; the dense dW is oneDNN's conv backward)."""
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs = []
            for shape in (SHAPES[0], SHAPES[9], SHAPES[15], SHAPES[-1]):
                n, c, h, w, o, k, s, p, d, g = shape
                x, wt, grad = _tensors(shape, torch.float32, seed=5)
                xr, wr = x.clone().requires_grad_(), wt.clone().requires_grad_()
                y = adder_conv2d(xr, wr, s, p, d, g, backend="native")
                y.backward(grad)
                outs += [y.detach(), xr.grad] + ([wr.grad] if shape == SHAPES[-1] else [])
            results.append(outs)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """Module state as in a new process, with the build cache in tmp_path."""
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_build_error", None)
    monkeypatch.setattr(native, "_auto_failure", None)
    return tmp_path / "cache"


def test_build_is_cached_on_disk_and_reused_by_a_new_process(fresh_native: Path) -> None:
    native.library()
    built = sorted(fresh_native.iterdir())
    assert len(built) == 1 and built[0].name.startswith("adder-") and built[0].suffix == ".so"  # no temp leftovers
    stamp = built[0].stat().st_mtime_ns
    code = ("from shiftaddaug_plugin.functional import _adder_native as n; import torch; n.library(); "
            "print(n._library_path(n._compiler()))")
    env = {"PYTHONPATH": str(REPO), native.CACHE_ENV: str(fresh_native), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(built[0])
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_cache_key_depends_on_the_cpu(fresh_native: Path, monkeypatch) -> None:
    compiler = native._compiler()
    here = native._library_path(compiler)
    monkeypatch.setattr(native, "_cpu_flags", lambda: "flags : fpu sse2")
    assert native._library_path(compiler) != here


def test_missing_compiler_is_a_clear_error_and_auto_falls_back(fresh_native: Path, monkeypatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(adder_mod, "_compile_failure", "simulated")  # fallback of the fallback: eager, no compiling
    shape = SHAPES[0]
    n, c, h, w, o, k, s, p, d, g = shape
    x, wt, grad = _tensors(shape, torch.float32)
    with pytest.raises(RuntimeError, match="C compiler"):
        adder_conv2d(x, wt, s, p, d, g, backend="native")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        y = adder_conv2d(x, wt, s, p, d, g, backend="auto")
    torch.testing.assert_close(y.double(), _reference(x, wt, grad, shape, False)[0], rtol=1e-5, atol=1e-4)
    assert adder_mod.resolve_backend("auto") == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        adder_conv2d(x, wt, s, p, d, g, backend="auto")
    assert not fresh_native.exists() or not any(fresh_native.iterdir())  # nothing half-written


def test_native_backend_names_the_supported_tensors() -> None:
    with pytest.raises(ValueError, match="CPU float32/float64"):
        adder_mod._native_for("native", torch.empty(0, device="meta"))
    assert adder_mod._native_for("auto", torch.empty(0, device="meta")) is False
    assert adder_mod.resolve_backend("auto") == "native"
    assert adder_mod.resolve_backend("native") == "native"
