"""The ``native`` adder backend: shape-generic C kernels (``native/adder.c``) built once per machine, called via ctypes.

Why: the ``compiled`` backend builds one inductor kernel per (phase, layer shape), which costs minutes before the
first training step of a new model (about 80 kernels for MCUNet). The C kernels take any shape, so one build of
one small file (about a second with ``cc -O3``) serves every model; later processes load the cached library.

Build: ``$CC`` (default ``cc``) with ``-O3 -march=native -fopenmp -shared -fPIC``, into
``$SHIFTADDAUG_NATIVE_CACHE`` (default ``~/.cache/shiftaddaug_plugin/native``) under a name that hashes the
source, the compiler, the flags and this CPU's instruction-set flags (a library built for another CPU of a shared
home directory is never loaded). The library is written to a temporary file and renamed, so concurrent first uses
by several processes are safe. OpenMP binds to the runtime torch already loaded (same ``libgomp.so.1``); the
kernels use ``torch.get_num_threads()`` threads and run without the GIL.

Layouts are built here (channels-last for general layers, channels-first for depthwise ones, see the C file);
float32 and float64 on the CPU only.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._adder_kernels import AdderGeometry

__all__ = ["CACHE_ENV", "SOURCE", "WIDE_ROW", "NativeBuildError", "library", "supports", "available_for", "forward",
           "input_grad", "weight_grad_depthwise", "is_depthwise", "depthwise_channels_last"]

CACHE_ENV = "SHIFTADDAUG_NATIVE_CACHE"
SOURCE = Path(__file__).with_name("native") / "adder.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_build_error: Optional[str] = None
_auto_failure: Optional[str] = None  #: set once ``auto`` has warned that the build failed
_BACKEND_ENV = "SHIFTADDAUG_ADDER_BACKEND"


class NativeBuildError(RuntimeError):
    """The C kernels could not be built or loaded (no compiler, no OpenMP, unwritable cache)."""


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "shiftaddaug_plugin" / "native"


def _library_path(compiler: str) -> Path:
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"C compiler {compiler!r} not usable ({exc}); install gcc or set CC") from exc
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(_FLAGS).encode(), _cpu_flags().encode(),
                 platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return _cache_dir() / f"adder-{digest.hexdigest()[:16]}.so"


def _build(target: Path, compiler: str) -> None:
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"C compiler {compiler!r} not found; install gcc (or set CC) to build the adder kernels")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *_FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise NativeBuildError(f"building {SOURCE.name} with {compiler!r} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: Kernels that allocate a per-thread staging buffer and return -1 when that fails.
_STATUS_KERNELS = ("adder_forward_depthwise_planes", "adder_input_grad_depthwise_planes")


def _declare(lib: ctypes.CDLL) -> None:
    p, i, n = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "adder_forward_nhwc": [p, p, p] + [i] * 14 + [n],
        "adder_input_grad_nhwc": [p, p, p, p] + [i] * 16 + [n, n],
        "adder_input_grad_nhwc_cvec": [p, p, p, p] + [i] * 16 + [n, n],
        "adder_forward_depthwise_planes": [p, p, p, p, p] + [i] * 11 + [n],
        "adder_input_grad_depthwise_planes": [p, p, p, p, p, p] + [i] * 14 + [n, n],
        "adder_forward_depthwise_nhwc": [p, p, p] + [i] * 12 + [n],
        "adder_input_grad_depthwise_nhwc": [p, p, p, p] + [i] * 14 + [n, n],
        "adder_weight_grad_depthwise_nhwc": [p, p, p, p] + [i] * 12 + [n],
    }
    for name, args in signatures.items():
        for suffix in _SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = args
            fn.restype = ctypes.c_int if name in _STATUS_KERNELS else None


def library() -> ctypes.CDLL:
    """The loaded kernel library, built on first use; raises :class:`NativeBuildError` (also on later calls)."""
    global _library, _build_error
    if _library is not None:
        return _library
    with _lock:
        if _library is not None:
            return _library
        if _build_error is not None:
            raise NativeBuildError(_build_error)
        try:
            compiler = _compiler()
            path = _library_path(compiler)
            if not path.exists():
                _build(path, compiler)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
        except (NativeBuildError, OSError, AttributeError) as exc:
            _build_error = str(exc) if isinstance(exc, NativeBuildError) else f"loading the adder kernels: {exc}"
            raise NativeBuildError(_build_error) from exc
        _library = lib
        return lib


def supports(x: Tensor) -> bool:
    """Whether the native kernels take this (already promoted) compute tensor: CPU, float32 or float64."""
    return x.device.type == "cpu" and x.dtype in _SUFFIX


#: Depthwise layers with at least this many output columns (half as many for strided layers; both measured with
#: benchmarks/ops.py) run channels-first on flattened (phase) planes (vectorised over a row); the others (few-pixel
#: late-stage maps) channels-last (vectorised over channels).
WIDE_ROW = 16

#: General layers with at least this many input channels per group compute dX vectorised over those channels.
CHANNEL_VECTOR = 8


def available_for(sample: Tensor, required: bool) -> bool:
    """Whether the native kernels run a call on ``sample``'s device and dtype. ``required`` (backend ``native``):
    a clear error instead of False. Otherwise (``auto``) a failed build warns once and is not retried."""
    global _auto_failure
    if not supports(sample):
        if required:
            raise ValueError(f"adder_conv2d: backend 'native' runs on CPU float32/float64 tensors, got "
                             f"{sample.dtype} on {sample.device}; use backend='auto' (or {_BACKEND_ENV}=auto), "
                             f"which compiles kernels for other devices")
        return False
    if not required and _auto_failure is not None:
        return False
    try:
        library()
    except NativeBuildError as exc:
        if required:
            raise RuntimeError(f"adder_conv2d: the native adder kernels are not available ({exc}). Install a C "
                               f"compiler (gcc) or use backend='compiled' / 'eager' ({_BACKEND_ENV}).") from exc
        _auto_failure = str(exc)
        warnings.warn(f"adder_conv2d: the native adder kernels could not be built ({exc}); using torch.compile "
                      f"kernels instead (minutes of compilation per new model). Set {_BACKEND_ENV}=compiled to "
                      f"silence this warning.", RuntimeWarning, stacklevel=6)
        return False
    return True


def is_depthwise(geom: AdderGeometry) -> bool:
    return geom.cg == 1 and geom.og == 1


def depthwise_channels_last(geom: AdderGeometry) -> bool:
    """Layout rule for depthwise layers (measured per layer shape, benchmarks/ops.py): channels-first phase planes
    for rows of ``WIDE_ROW`` or more output pixels (``WIDE_ROW // 2`` when strided), channels-last below."""
    return geom.wo < (WIDE_ROW if geom.stride == (1, 1) else WIDE_ROW // 2)


def _taps_by_channel(weight: Tensor, geom: AdderGeometry) -> Tensor:
    """Depthwise weight (C, 1, KH, KW) -> (KH * KW, C) contiguous."""
    return weight.reshape(geom.c, geom.kh * geom.kw).t().contiguous()


def _channels_last(t: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H, W, C) contiguous."""
    return t.permute(0, 2, 3, 1).contiguous()


def _channels_first(t: Tensor) -> Tensor:
    """(N, H, W, C) -> (N, C, H, W) contiguous."""
    return t.permute(0, 3, 1, 2).contiguous()


def _axis_taps(size: int, stride: int, dilation: int, shift: int) -> List[Tuple[int, int]]:
    """Per tap ``k`` of one axis, ``(a, c)`` with ``dilation * k - shift = stride * c + a`` and ``0 <= a < stride``:
    the tap reads phase ``a`` of the input, ``c`` pixels of that phase after (forward) or before (dX) the output."""
    return [(r % stride, r // stride) for r in (dilation * k - shift for k in range(size))]


def _tap_table(rows: List[Tuple[int, int]], cols: List[Tuple[int, int]], sw: int, pitch: int,
               frame: Optional[Tuple[int, int]] = None) -> Tuple[Tensor, Tensor]:
    """Per tap (row-major): its phase plane and flat offset, ``c_h * pitch + c_w`` for the forward (no frame) and
    ``(top - c_h) * pitch + left - c_w`` for dX, whose g sits in a frame with margins ``frame = (top, left)``."""
    sign, (top, left) = (1, (0, 0)) if frame is None else (-1, frame)
    plane = [ah * sw + aw for ah, _ in rows for aw, _ in cols]
    offset = [(top + sign * ch) * pitch + left + sign * cw for _, ch in rows for _, cw in cols]
    return torch.tensor(plane, dtype=torch.int64), torch.tensor(offset, dtype=torch.int64)


def _fn(name: str, dtype: torch.dtype):  # noqa: ANN202 - a ctypes function pointer
    return getattr(library(), f"{name}_{_SUFFIX[dtype]}")


def _ptr(t: Tensor) -> int:
    """Address of a contiguous CPU tensor; the caller keeps ``t`` referenced until the kernel returns."""
    if not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError("native adder kernels take contiguous CPU tensors")
    return t.data_ptr()


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("native adder kernel: out of memory for its per-thread staging buffer")


def _same_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    if dtype not in _SUFFIX or any(t.dtype != dtype for t in tensors):
        raise ValueError(f"native adder kernels take float32 or float64 tensors of one dtype, got "
                         f"{[t.dtype for t in tensors]}")
    return dtype


def _grouped_weight(weight: Tensor, geom: AdderGeometry) -> Tensor:
    """(O, CG, KH, KW) -> (G, KH, KW, CG, OG) contiguous."""
    return (weight.reshape(geom.groups, geom.og, geom.cg, geom.kh, geom.kw).permute(0, 3, 4, 2, 1).contiguous())


def forward(xp: Tensor, weight: Tensor, geom: AdderGeometry) -> Tensor:
    """Y (N, O, Ho, Wo) from the zero-padded input ``xp`` (N, C, Hp, Wp); contiguous inputs of one dtype."""
    _same_dtype(xp, weight)
    weight = weight.contiguous()
    n, c, hp, wp = xp.shape
    threads = torch.get_num_threads()
    common = (geom.kh, geom.kw, *geom.stride, *geom.dilation)
    if is_depthwise(geom) and depthwise_channels_last(geom):
        xl, wl = _channels_last(xp), _taps_by_channel(weight, geom)
        out_l = torch.empty((n, geom.ho, geom.wo, c), dtype=xp.dtype)
        _fn("adder_forward_depthwise_nhwc", xp.dtype)(_ptr(xl), _ptr(wl), _ptr(out_l), n, c, hp, wp, geom.ho,
                                                      geom.wo, *common, threads)
        return _channels_first(out_l)
    if is_depthwise(geom):  # phase planes of the padded input, staged per channel in the C kernel
        (sh, sw), (dh, dw) = geom.stride, geom.dilation
        hq, wq = -(-hp // sh), -(-wp // sw)
        tap_plane, tap_offset = _tap_table(_axis_taps(geom.kh, sh, dh, 0), _axis_taps(geom.kw, sw, dw, 0), sw, wq)
        out, xc = torch.empty((n, c, geom.ho, geom.wo), dtype=xp.dtype), xp.contiguous()
        _check(_fn("adder_forward_depthwise_planes", xp.dtype)(
            _ptr(xc), _ptr(weight), _ptr(tap_plane), _ptr(tap_offset), _ptr(out), n, c, hp, wp, sh, sw,
            hq, wq, geom.ho, geom.wo, geom.kh * geom.kw, threads))
        return out
    xl, wt = _channels_last(xp), _grouped_weight(weight, geom)
    out_l = torch.empty((n, geom.ho, geom.wo, geom.o), dtype=xp.dtype)
    _fn("adder_forward_nhwc", xp.dtype)(_ptr(xl), _ptr(wt), _ptr(out_l), n, hp, wp, c, geom.ho, geom.wo, geom.o,
                                        *common, geom.groups, threads)
    return _channels_first(out_l)


def _depthwise_planes_input_grad(x: Tensor, weight: Tensor, grad: Tensor, geom: AdderGeometry,
                                 exact: bool) -> Tensor:
    """dX of a depthwise layer on the phase planes of the unpadded input; g in a zero frame of the planes' pitch
    with margins chosen so that every tap's read stays in range (the C kernel's comment)."""
    n, c, h, w = x.shape
    (sh, sw), (dh, dw), (ph, pw) = geom.stride, geom.dilation, geom.padding
    rows, cols = _axis_taps(geom.kh, sh, dh, ph), _axis_taps(geom.kw, sw, dw, pw)
    top, left = max(r for _, r in rows), max(q for _, q in cols)
    hx, pitch = -(-h // sh), -(-w // sw) + left - min(q for _, q in cols)
    frame_h = hx + top - min(r for _, r in rows)
    tap_plane, tap_offset = _tap_table(rows, cols, sw, pitch, (top, left))
    out, xc, gc = torch.empty_like(x, memory_format=torch.contiguous_format), x.contiguous(), grad.contiguous()
    _check(_fn("adder_input_grad_depthwise_planes", x.dtype)(
        _ptr(xc), _ptr(weight), _ptr(gc), _ptr(tap_plane), _ptr(tap_offset), _ptr(out),
        n, c, h, w, sh, sw, hx, pitch, geom.ho, geom.wo, top, left, frame_h, geom.kh * geom.kw, int(exact),
        torch.get_num_threads()))
    return out


def input_grad(x: Tensor, weight: Tensor, grad: Tensor, geom: AdderGeometry, exact: bool) -> Tensor:
    """dX (N, C, H, W) = sum g * phi(W - X) (phi = hardtanh, or sign when ``exact``)."""
    _same_dtype(x, weight, grad)
    weight = weight.contiguous()
    n, c, h, w = x.shape
    threads = torch.get_num_threads()
    common = (geom.kh, geom.kw, *geom.stride, *geom.padding, *geom.dilation)
    if is_depthwise(geom) and not depthwise_channels_last(geom):
        return _depthwise_planes_input_grad(x, weight, grad, geom, exact)
    xl, gl = _channels_last(x), _channels_last(grad)
    if is_depthwise(geom):
        name, wt = "adder_input_grad_depthwise_nhwc", _taps_by_channel(weight, geom)
        out_l = torch.empty((n, h, w, c), dtype=x.dtype)
        _fn(name, x.dtype)(_ptr(xl), _ptr(wt), _ptr(gl), _ptr(out_l), n, c, h, w, geom.ho, geom.wo, *common,
                           int(exact), threads)
        return _channels_first(out_l)
    if geom.cg >= CHANNEL_VECTOR:  # vectorised over input channels: (G, KH, KW, OG, CG)
        name = "adder_input_grad_nhwc_cvec"
        wt = weight.reshape(geom.groups, geom.og, geom.cg, geom.kh, geom.kw).permute(0, 3, 4, 1, 2).contiguous()
    else:  # a reduction over output channels per input channel: (G, KH, KW, CG, OG)
        name, wt = "adder_input_grad_nhwc", _grouped_weight(weight, geom)
    out_l = torch.empty((n, h, w, c), dtype=x.dtype)
    _fn(name, x.dtype)(_ptr(xl), _ptr(wt), _ptr(gl), _ptr(out_l), n, h, w, c, geom.ho, geom.wo, geom.o, *common,
                       geom.groups, int(exact), threads)
    return _channels_first(out_l)


def weight_grad_depthwise(x: Tensor, weight: Tensor, grad: Tensor, geom: AdderGeometry) -> Tensor:
    """Unscaled full-precision dW = sum g (Xpad - W) of a depthwise layer, (C, 1, KH, KW), channels-last."""
    _same_dtype(x, weight, grad)
    ph, pw = geom.padding
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    n, c, hp, wp = xp.shape
    xl, gl, wl = _channels_last(xp), _channels_last(grad), _taps_by_channel(weight, geom)
    out_l = torch.empty((geom.kh * geom.kw, c), dtype=x.dtype)
    _fn("adder_weight_grad_depthwise_nhwc", x.dtype)(_ptr(xl), _ptr(wl), _ptr(gl), _ptr(out_l), n, c, hp, wp,
                                                     geom.ho, geom.wo, geom.kh, geom.kw, *geom.stride,
                                                     *geom.dilation, torch.get_num_threads())
    return out_l.t().reshape(weight.shape).contiguous()
