"""AdderNet convolution ``Y = -sum |X - W|`` with AdderNet's gradients, fast on CPU (docs/algorithms.md §2).

Public API
----------
``adder_conv2d(x, weight, stride=1, padding=0, dilation=1, groups=1, eta=0.2, *, grad_mode='spec', backend=None)``

* forward (AdderNet, Chen et al. CVPR 2020, eq. 2): ``Y[n,o,p] = -sum_{c,k} |X[n,c,p+k] - W[o,c,k]|``; zero
  padding counts as x = 0; any stride / padding / dilation / groups (depthwise included). No bias: add it outside.
* backward, ``grad_mode='spec'`` (AdderNet eqs. 5, 6, 13):
  ``dW = sum g * (X - W)`` computed exactly as ``conv2d_weight(X, g) - W * sum_{n,p} g`` (conv speed; compiled
  per-tap reductions instead for depthwise layers on few-pixel maps, where conv's backward is slow), then
  adaptive scaling ``dW <- eta * sqrt(numel(W)) / max(||dW||_2, 1e-12) * dW``; ``dX = sum g * HardTanh(W - X)``.
* backward, ``grad_mode='exact'``: the true derivative, ``dX = sum g * sign(W - X)``, ``dW = sum g * sign(X - W)``,
  no scaling. For verifying the plumbing with :func:`torch.autograd.gradcheck` (float64, inputs away from ties);
  its dX uses the same kernels as ``spec`` (sign instead of HardTanh), its dW always the chunked eager reduction.
* Half / bfloat16 inputs (e.g. under autocast) are upcast: all sums run in float32 and the output is float32.

Backends (``backend=`` argument, else the ``SHIFTADDAUG_ADDER_BACKEND`` environment variable, default ``auto``)
------------------------------------------------------------------------------------------------------------
* ``native``: shape-generic C kernels (:mod:`._adder_native`, ``native/adder.c``) for float32 / float64 CPU
  tensors, built once per machine with the system C compiler (about 2 s) and cached on disk; no per-shape
  compilation, so a new model's first step costs what its steady steps cost. Forward and dX of every layer, and
  the depthwise part of dW; the dense dW stays ``conv2d_weight`` (below). Fails with a clear error when no C
  compiler is found or the tensors are not CPU float32/float64.
* ``compiled``: the forward and dX formulations of :mod:`._adder_kernels` compiled with
  ``torch.compile(dynamic=False, fullgraph=True)``, one compilation per shape (seconds, cached on disk by
  inductor). Depthwise and pointwise layers use one fused kernel each for forward and dX; dense k x k layers
  choose between the fused kernel (``taps`` / ``gather``: fastest, but inductor keeps k*k reduction buffers) and
  ``tapwise`` (one small kernel call per tap into a single accumulator). A small autotuner times the candidates
  once per shape key and caches the choice for the process (``SHIFTADDAUG_ADDER_AUTOTUNE=0`` skips timing and
  takes the first candidate); fused candidates whose buffers exceed ``FUSED_BYTES_LIMIT`` are never
  considered (96 MiB). Compilation failures raise.
* ``eager``: no compiler; chunked so that no intermediate exceeds ``EAGER_CHUNK_BYTES`` (64 MiB, env
  ``SHIFTADDAUG_ADDER_CHUNK_MB``). Much slower, bounded memory.
* ``auto``: ``native`` for CPU float32/float64 tensors; ``compiled`` for the others (CUDA) and, with a warning
  issued once, when the native kernels cannot be built; if ``torch.compile`` is unavailable or fails once, a
  warning is issued once and the eager path is used for the rest of the process. Inside an outer
  ``torch.compile`` trace the plain (uncompiled) formulations are emitted so that the outer compiler fuses them.
* ``with eager_adders():`` forces ``eager`` for one block, whatever the setting (one-off passes such as the cost
  counter's, where compiling every layer shape would cost minutes).

Dynamo's recompile limit is raised on first use (a tiny network has more than 8 adder layer shapes; past the
limit dynamo would silently run the formulation eagerly and materialise ``N*O*C*k*k*L`` tensors), and every
compiled call runs with ``fail_on_recompile_limit_hit`` so that hitting it can never go unnoticed.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _adder_kernels as K
from . import _adder_native as _native
from ._adder_args import IntOrPair
from ._adder_args import geometry as _geometry
from ._adder_kernels import AdderGeometry

__all__ = [
    "adder_conv2d",
    "BACKEND_ENV",
    "AUTOTUNE_ENV",
    "CHUNK_MB_ENV",
    "resolve_backend",
    "eager_adders",
    "autotune_choices",
    "clear_autotune_cache",
    "forward_candidates",
    "input_grad_candidates",
    "FUSED_BYTES_LIMIT",
]

BACKEND_ENV = "SHIFTADDAUG_ADDER_BACKEND"
AUTOTUNE_ENV = "SHIFTADDAUG_ADDER_AUTOTUNE"
CHUNK_MB_ENV = "SHIFTADDAUG_ADDER_CHUNK_MB"
_BACKENDS = ("auto", "native", "compiled", "eager")
_GRAD_MODES = ("spec", "exact")

#: Byte budget of one intermediate on the eager path (``plan_chunks``); env ``SHIFTADDAUG_ADDER_CHUNK_MB``.
EAGER_CHUNK_BYTES: int = K.DEFAULT_CHUNK_BYTES

#: The fused (whole-function) formulations of dense layers keep k*k reduction buffers alive; above this many
#: bytes only the per-tap ``tapwise`` formulation (one accumulator) is considered.
FUSED_BYTES_LIMIT: int = 96 * 2**20

#: Timed rounds per candidate when autotuning a shape (the minimum is kept).
AUTOTUNE_ROUNDS = 3

#: Recompile limits set on first compiled use (dynamo's default of 8 per function is far too low).
RECOMPILE_LIMIT = 1024
ACCUMULATED_RECOMPILE_LIMIT = 8192

_FORWARD_FORMULATIONS: Dict[str, Callable[..., Tensor]] = {
    "taps": K.forward_taps,
    "rows": K.forward_rows,
}
_INPUT_GRAD_FORMULATIONS: Dict[str, Callable[..., Tensor]] = {
    "gather": K.input_grad_gather,
    "rows_dx": K.input_grad_rows,
}

_lock = threading.Lock()
_compiled_fns: Dict[str, Callable[..., Tensor]] = {}
_autotune_cache: Dict[Tuple, str] = {}
_compile_failure: Optional[str] = None
_limits_raised = False
_forced_eager = threading.local()


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    dtype = dtypes[0]
    for other in dtypes[1:]:
        dtype = torch.promote_types(dtype, other)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _eager_budget() -> int:
    mb = os.environ.get(CHUNK_MB_ENV)
    if mb:
        try:
            value = float(mb)
        except ValueError:
            raise ValueError(f"{CHUNK_MB_ENV}={mb!r} is not a number of MiB (e.g. 64)") from None
        if value <= 0:
            raise ValueError(f"{CHUNK_MB_ENV} must be > 0, got {mb!r}")
        return int(value * 2**20)
    return EAGER_CHUNK_BYTES


# --------------------------------------------------------------------------------------------------------------
# backend selection and compilation
# --------------------------------------------------------------------------------------------------------------
def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


@contextlib.contextmanager
def eager_adders() -> Iterator[None]:
    """Run every adder call of this thread on the ``eager`` backend inside the block (any ``backend`` setting)."""
    before = getattr(_forced_eager, "on", False)
    _forced_eager.on = True
    try:
        yield
    finally:
        _forced_eager.on = before


def _parse_backend(backend: Optional[str]) -> str:
    if getattr(_forced_eager, "on", False):
        return "eager"
    requested = backend if backend is not None else os.environ.get(BACKEND_ENV, "auto")
    if not isinstance(requested, str) or requested.strip().lower() not in _BACKENDS:
        source = "backend argument" if backend is not None else f"environment variable {BACKEND_ENV}"
        raise ValueError(f"adder_conv2d: {source} is {requested!r}; use one of {', '.join(_BACKENDS)}")
    return requested.strip().lower()


def _internal_backend(backend: Optional[str]) -> str:
    """'eager' | 'traced' (inside an outer compile) | 'native' | 'compiled' (raise on failure) | 'auto' (per call:
    native where it applies, else compiled, falling back)."""
    requested = _parse_backend(backend)
    if requested == "eager":
        return "eager"
    if _is_compiling():
        return "traced"
    return requested


def resolve_backend(backend: Optional[str] = None) -> str:
    """The path a CPU float32 call would take now: ``'native'``, ``'compiled'``, ``'eager'`` or ``'traced'``
    (inside an outer compile). Under ``auto`` this builds the native kernels if they are not built yet.

    ``backend`` overrides the ``SHIFTADDAUG_ADDER_BACKEND`` environment variable (``auto|native|compiled|eager``).
    """
    internal = _internal_backend(backend)
    if internal != "auto":
        return internal
    if _native_for("auto", torch.empty(0)):
        return "native"
    return "compiled" if _use_compiler("auto") else "eager"


def _native_for(backend: str, sample: Tensor) -> bool:
    """Whether this call runs the native kernels (``native``: required, ``auto``: where they apply and build)."""
    return backend in ("native", "auto") and _native.available_for(sample, required=backend == "native")


def _raise_recompile_limits() -> None:
    global _limits_raised
    if _limits_raised:
        return
    import torch._dynamo.config as dynamo_config

    for name, value in (("recompile_limit", RECOMPILE_LIMIT), ("cache_size_limit", RECOMPILE_LIMIT),
                        ("accumulated_recompile_limit", ACCUMULATED_RECOMPILE_LIMIT),
                        ("accumulated_cache_size_limit", ACCUMULATED_RECOMPILE_LIMIT)):
        current = getattr(dynamo_config, name, None)
        if isinstance(current, int) and current < value:
            setattr(dynamo_config, name, value)
    _limits_raised = True


def _compiled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    with _lock:
        cfn = _compiled_fns.get(name)
        if cfn is None:
            _raise_recompile_limits()
            cfn = torch.compile(fn, dynamic=False, fullgraph=True)
            _compiled_fns[name] = cfn
    return cfn


class _CompileFallback(Exception):
    """Internal: compilation failed under ``auto``; the caller switches to the eager path."""


#: Positions of the arguments whose dim 0 is the batch, per compiled kernel. They are marked dynamic so that one
#: compilation per layer geometry serves every batch size (training, the last partial batch, evaluation, BN
#: recalibration); with static batch sizes a tiny adder network recompiled every layer for each new batch size
#: (minutes per process). Weights are never marked: their dim 0 is the fixed output-channel count.
_BATCH_ARGS: Dict[str, Tuple[int, ...]] = {
    "taps": (0,),               # forward_taps(xp, weight, ...)
    "rows": (0,),               # forward_rows(xp, weight, ...)
    "rows_dx": (0, 2),          # input_grad_rows(x, weight, grad, ...)
    "dw_weight_grad": (0, 2),   # weight_grad_depthwise_taps(x, weight, grad, ...)
    "forward_tap": (0, 1),      # forward_tap_accumulate(acc, xt, wt, groups)
    "gather": (0, 2),           # input_grad_gather(x, weight, grad, ...)
    "input_grad_tap": (0, 1, 2),  # input_grad_tap_accumulate(acc, xt, gt, wt, groups, exact)
}


def _mark_batch_dynamic(name: str, args: tuple) -> None:
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None)
    if mark is None:  # older torch: static shapes (still correct, only recompiles per batch size)
        return
    for index in _BATCH_ARGS.get(name, ()):
        tensor = args[index]
        if isinstance(tensor, Tensor) and tensor.dim() > 0:
            mark(tensor, 0)


def _call_compiled(name: str, fn: Callable[..., Any], args: tuple, backend: str) -> Any:
    """Run ``fn`` compiled (batch dimension dynamic, see ``_BATCH_ARGS``); on failure raise RuntimeError
    (``compiled``) or warn once and raise :class:`_CompileFallback` (``auto``)."""
    global _compile_failure
    try:
        import torch._dynamo.config as dynamo_config

        # detached views: a Parameter or a requires_grad flag would otherwise be guarded on (one more
        # compilation per shape for nothing: the kernels never record autograd history)
        args = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        _mark_batch_dynamic(name, args)
        with dynamo_config.patch(fail_on_recompile_limit_hit=True):
            return _compiled(name, fn)(*args)
    except Exception as exc:  # compiler missing / broken toolchain / recompile limit: fall back or raise
        if backend == "compiled":
            raise RuntimeError(
                f"adder_conv2d: torch.compile of the '{name}' kernel failed ({type(exc).__name__}: {exc}). "
                f"Use backend='eager' (or {BACKEND_ENV}=eager / auto) to run without a compiler."
            ) from exc
        if _compile_failure is None:
            _compile_failure = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"adder_conv2d: torch.compile failed ({_compile_failure}); using the slower chunked eager path "
                f"for the rest of this process. Set {BACKEND_ENV}=eager to silence this warning.",
                RuntimeWarning,
                stacklevel=4,
            )
        raise _CompileFallback() from exc


def _fused_bytes(geom: AdderGeometry, itemsize: int, phase: str) -> int:
    """Bytes of the reduction buffers inductor keeps alive in the fused (whole-function) formulation."""
    if phase == "forward":
        terms = 1 if geom.is_depthwise_like else geom.kh * geom.kw
        return terms * geom.n * geom.o * geom.ho * geom.wo * itemsize
    terms = 2 if geom.og == 1 else geom.kh * geom.kw
    return terms * geom.n * geom.c * geom.h * geom.w * itemsize


def forward_candidates(geom: AdderGeometry, itemsize: int = 4) -> List[str]:
    """Forward formulations worth timing for a shape; the first is the default when autotuning is off.

    1x1 kernels and one input channel per group (depthwise) use the fused ``taps`` kernel (one reduction, or a
    pointwise sum of k*k shifted views), except pointwise ``groups == 1`` layers with fewer than
    ``SMALL_SPATIAL`` output pixels, which use the channels-last ``rows`` kernel. Dense k x k layers time ``taps``
    against ``tapwise``; ``taps`` is only a candidate while its k*k reduction buffers stay within
    ``FUSED_BYTES_LIMIT``.
    """
    if geom.is_pointwise and geom.groups == 1 and geom.ho * geom.wo < K.SMALL_SPATIAL:
        return ["rows"]
    if geom.is_pointwise or geom.is_depthwise_like:
        return ["taps"]
    if _fused_bytes(geom, itemsize, "forward") <= FUSED_BYTES_LIMIT:
        return ["taps", "tapwise"]
    return ["tapwise"]


def input_grad_candidates(geom: AdderGeometry, itemsize: int = 4) -> List[str]:
    """dX formulations for a shape (same rules as :func:`forward_candidates`, over output channels; ``rows_dx``
    needs stride 1 and no padding)."""
    if (geom.is_pointwise and geom.groups == 1 and geom.h * geom.w < K.SMALL_SPATIAL
            and geom.stride == (1, 1) and geom.padding == (0, 0)):
        return ["rows_dx"]
    if geom.is_pointwise or geom.og == 1:
        return ["gather"]
    if _fused_bytes(geom, itemsize, "input_grad") <= FUSED_BYTES_LIMIT:
        return ["gather", "tapwise"]
    return ["tapwise"]


def _autotune_enabled() -> bool:
    return os.environ.get(AUTOTUNE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_forward(name: str, args: Any, backend: str) -> Tensor:
    if name == "tapwise":
        def kernel(*kargs: Any) -> None:
            _call_compiled("forward_tap", K.forward_tap_accumulate, kargs, backend)

        return K.forward_tapwise(*args, tap_kernel=kernel)  # type: ignore[misc]  # args: the 6 positional
    return _call_compiled(name, _FORWARD_FORMULATIONS[name], args, backend)


def _run_input_grad(name: str, args: Any, backend: str) -> Tensor:
    if name == "tapwise":
        def kernel(*kargs: Any) -> None:
            _call_compiled("input_grad_tap", K.input_grad_tap_accumulate, kargs, backend)

        return K.input_grad_tapwise(*args, tap_kernel=kernel)  # type: ignore[misc]  # args: the 8 positional
    return _call_compiled(name, _INPUT_GRAD_FORMULATIONS[name], args, backend)


def _autotuned(phase: str, geom: AdderGeometry, sample: Tensor, extra: tuple, candidates: List[str],
               run: Callable[[str], Tensor]) -> Tensor:
    """Run the cached choice for this shape key; on a new key compile every candidate, time them alternately
    for ``AUTOTUNE_ROUNDS`` rounds, keep the fastest (by minimum) for the rest of the process."""
    key = (phase, geom, sample.dtype, sample.device.type) + extra
    choice = _autotune_cache.get(key)
    if choice is not None:
        return run(choice)
    if len(candidates) == 1 or not _autotune_enabled():
        _autotune_cache[key] = candidates[0]
        return run(candidates[0])
    outputs = {name: run(name) for name in candidates}  # compiles and warms up every candidate
    elapsed = {name: math.inf for name in candidates}
    for _ in range(AUTOTUNE_ROUNDS):  # alternate candidates so machine-load drift hits them alike; keep minima
        for name in candidates:
            _sync(sample.device)
            start = time.perf_counter()
            outputs[name] = run(name)
            _sync(sample.device)
            elapsed[name] = min(elapsed[name], time.perf_counter() - start)
    best_name = min(candidates, key=lambda name: elapsed[name])
    best_out = outputs[best_name]
    _autotune_cache[key] = best_name
    return best_out


def autotune_choices() -> Dict[str, str]:
    """Formulations chosen so far in this process, keyed by a readable description of the shape."""
    readable = {}
    for key, name in _autotune_cache.items():
        phase, g, dtype, device = key[:4]
        desc = (f"{phase} N{g.n} C{g.c} {g.h}x{g.w} O{g.o} k{g.kh}x{g.kw} s{g.stride} p{g.padding} "
                f"d{g.dilation} g{g.groups} {str(dtype).replace('torch.', '')} {device}")
        if len(key) > 4:
            desc += " exact" if key[4] else ""
        readable[desc] = name
    return readable


def clear_autotune_cache() -> None:
    """Forget the autotuner's choices (compiled kernels stay cached by dynamo/inductor)."""
    _autotune_cache.clear()


# --------------------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------------------
def _use_compiler(backend: str) -> bool:
    return backend == "compiled" or (backend == "auto" and _compile_failure is None and hasattr(torch, "compile"))


def _forward(xp: Tensor, weight: Tensor, geom: AdderGeometry, backend: str) -> Tensor:
    args = (xp, weight, geom.stride, geom.dilation, geom.groups, (geom.ho, geom.wo))
    if backend == "traced":
        return K.forward_taps(*args)
    if _native_for(backend, xp):
        return _native.forward(xp, weight, geom)
    if _use_compiler(backend):
        try:
            return _autotuned("forward", geom, xp, (), forward_candidates(geom, xp.element_size()),
                              lambda name: _run_forward(name, args, backend))
        except _CompileFallback:
            pass
    return K.eager_forward(*args, budget_bytes=_eager_budget())


def _input_grad(x: Tensor, weight: Tensor, grad: Tensor, geom: AdderGeometry, exact: bool, backend: str) -> Tensor:
    args = (x, weight, grad, geom.stride, geom.padding, geom.dilation, geom.groups, exact)
    if backend == "traced":
        return K.input_grad_gather(*args)
    if _native_for(backend, x):
        return _native.input_grad(x, weight, grad, geom, exact)
    if _use_compiler(backend):
        try:
            return _autotuned("input_grad", geom, x, (exact,), input_grad_candidates(geom, x.element_size()),
                              lambda name: _run_input_grad(name, args, backend))
        except _CompileFallback:
            pass
    return K.eager_input_grad(*args, budget_bytes=_eager_budget())


def uses_depthwise_weight_grad_taps(geom: AdderGeometry) -> bool:
    """Depthwise layers (one input, one output channel per group) with fewer than ``SMALL_SPATIAL`` output pixels
    compute the conv part of dW with the compiled per-tap reductions instead of the convolution backward."""
    return geom.cg == 1 and geom.og == 1 and geom.ho * geom.wo < K.SMALL_SPATIAL


def _weight_grad(x: Tensor, weight: Tensor, grad: Tensor, geom: AdderGeometry, backend: str) -> Tensor:
    """Unscaled spec dW = sum g (X - W), see :func:`._adder_kernels.weight_grad_conv`."""
    args = (x, weight, grad, geom.stride, geom.padding, geom.dilation, geom.groups)
    if backend != "traced" and uses_depthwise_weight_grad_taps(geom) and _native_for(backend, x):
        return _native.weight_grad_depthwise(x, weight, grad, geom)
    if backend != "traced" and _use_compiler(backend) and uses_depthwise_weight_grad_taps(geom):
        try:
            return _call_compiled("dw_weight_grad", K.weight_grad_depthwise_taps, args, backend)
        except _CompileFallback:
            pass
    return K.weight_grad_conv(*args)


class _AdderConv2dFunction(torch.autograd.Function):
    """Autograd wrapper: forward Y = -sum|X - W|, AdderNet (or exact) backward; see module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, geom: AdderGeometry, eta: float, exact: bool,  # type: ignore[override]
                backend: str) -> Tensor:
        dtype = _compute_dtype(x.dtype, weight.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xc = x.to(dtype).contiguous()
            wc = weight.to(dtype).contiguous()
            ph, pw = geom.padding
            xp = F.pad(xc, (pw, pw, ph, ph)) if (ph or pw) else xc
            out = _forward(xp, wc, geom, backend)
        ctx.save_for_backward(x, weight)
        ctx.geom, ctx.eta, ctx.exact, ctx.backend, ctx.dtype = geom, eta, exact, backend, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        geom: AdderGeometry = ctx.geom
        dtype: torch.dtype = ctx.dtype
        grad_x = grad_w = None
        with torch.autocast(device_type=x.device.type, enabled=False):
            xc = x.to(dtype).contiguous()
            wc = weight.to(dtype).contiguous()
            g = grad_out.to(dtype).contiguous()
            if ctx.needs_input_grad[0]:
                grad_x = _input_grad(xc, wc, g, geom, ctx.exact, ctx.backend).to(x.dtype)
            if ctx.needs_input_grad[1]:
                if ctx.exact:
                    grad_w = K.eager_weight_grad_exact(xc, wc, g, geom.stride, geom.padding, geom.dilation,
                                                       geom.groups, budget_bytes=_eager_budget())
                else:
                    grad_w = K.adaptive_scale(_weight_grad(xc, wc, g, geom, ctx.backend), ctx.eta)
                grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w, None, None, None, None


def adder_conv2d(x: Tensor, weight: Tensor, stride: IntOrPair = 1, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, groups: int = 1, eta: float = 0.2, *, grad_mode: str = "spec",
                 backend: Optional[str] = None) -> Tensor:
    """AdderNet 2-D convolution ``Y = -sum_{c,k} |X - W|`` (docs/algorithms.md §2; AdderNet eq. 2, gradients eqs. 5-13).

    Args:
        x: input (N, C, H, W).
        weight: (O, C/groups, kh, kw).
        stride, padding, dilation: int or (h, w) pair; zero padding counts as x = 0.
        groups: channel groups (``groups == C == O`` is depthwise).
        eta: adaptive gradient scaling factor of dW (AdderNet eq. 13), used with ``grad_mode='spec'``.
        grad_mode: ``'spec'`` (AdderNet gradients) or ``'exact'`` (true derivative, for gradcheck).
        backend: ``'auto' | 'native' | 'compiled' | 'eager'``; None reads ``SHIFTADDAUG_ADDER_BACKEND`` (default auto).

    Returns:
        (N, O, Ho, Wo), float32 for half/bfloat16 inputs, else the promoted input dtype.
    """
    geom = _geometry(x, weight, stride, padding, dilation, groups)
    if grad_mode not in _GRAD_MODES:
        raise ValueError(f"adder_conv2d: grad_mode must be one of {_GRAD_MODES}, got {grad_mode!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"adder_conv2d: eta must be a positive finite number (AdderNet uses 0.2), got {eta!r}")
    return _AdderConv2dFunction.apply(x, weight, geom, float(eta), grad_mode == "exact",
                                      _internal_backend(backend))
