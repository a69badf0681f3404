"""Tensor formulations of the AdderNet operator (docs/algorithms.md §2), shared by the compiled and the eager paths.

Nothing here compiles or keeps state: :mod:`shiftaddaug_plugin.functional.adder` wraps these functions with
``torch.compile`` (whole-function, static shapes) or calls the ``eager_*`` chunked variants.

Notation (AdderNet, Chen et al. CVPR 2020, eq. 2; padding counts as x = 0)::

    Y[n, o, p]  = -sum_{c, k} |Xpad[n, c, s*p + d*k] - W[o, c, k]|
    dX[n, c, q] =  sum_{o, k, p : s*p + d*k = q + pad} g[n, o, p] * phi(W[o, c, k] - X[n, c, q])
    dW          =  conv2d_weight(X, g) - W * sum_{n, p} g           (rank-1 identity, full-precision gradient)

with ``phi = hardtanh`` (AdderNet's surrogate) or ``phi = sign`` (the true derivative, ``exact`` mode). The
channel axis is split into ``G`` groups: X -> (N, G, 1, Cg, ...), W -> (1, G, Og, Cg, ...), so one code path
covers dense, grouped and depthwise (Cg = 1) layers.

Formulations
------------
* ``forward_taps``: one reduction over the Cg input channels per kernel tap, applied to a *strided view* of the
  padded input (no im2col buffer); inductor fuses the ``k*k`` reductions and their sum into one loop nest, so the
  N*O*Cg*L broadcast is never materialised. With Cg = 1 (depthwise) it is k*k shifted views summed, pointwise.
* ``forward_tapwise``: the same per-tap reductions, one small compiled kernel call per tap accumulating in
  place: one output-sized buffer instead of the ``k*k`` reduction buffers inductor allocates for the fused
  version of a dense layer (measured 144 MB vs 16 MB for 64->64 3x3, batch 64, 32x32), 1.1-1.7x slower.
* ``forward_patch``: a single reduction over (Cg, kh, kw) of an ``as_strided`` patch view (kept as a reference
  formulation; measured 3-4.5x slower than ``forward_taps`` under inductor on CPU, so not autotuned).
* ``input_grad_gather``: dX written as a *gather* over output positions, split into ``stride**2`` phases
  (q = s*a + r) so that every (phase, tap) pair is a plain reduction over the Og output channels of a shifted
  slice of zero-padded ``g`` (``input_grad_tapwise``: the per-(phase, tap) kernel version). (A scatter formulation
  ``dXpad[tap slice] += T_tap`` was measured 14-58x slower than
  conv fwd+bwd under inductor and takes minutes to compile; the gather has no scatter at all.)
* ``eager_*``: the same maths without a compiler, chunked over (batch, output channel, input channel) so that
  no intermediate exceeds a byte budget (:func:`plan_chunks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Pair = Tuple[int, int]


@dataclass(frozen=True)
class AdderGeometry:
    """Static shape description of one adder convolution call (all sizes in elements)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def og(self) -> int:
        return self.o // self.groups

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.padding[0] - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.padding[1] - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1

    @property
    def is_depthwise_like(self) -> bool:
        """One input channel per group (depthwise, possibly with a channel multiplier)."""
        return self.cg == 1

    @property
    def is_pointwise(self) -> bool:
        return self.kh == 1 and self.kw == 1


# --------------------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------------------
def _tap_slice(start: int, stride: int, count: int) -> slice:
    return slice(start, start + stride * (count - 1) + 1, stride)


def forward_taps(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int, out_hw: Pair) -> Tensor:
    """Forward on the zero-padded input ``xp``: per-tap channel reductions of strided views, summed."""
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = out_hw
    xg = xp.reshape(n, groups, 1, cg, hp, wp)
    wg = weight.reshape(1, groups, og, cg, kh, kw)
    terms = []
    for i in range(kh):
        rows = _tap_slice(i * dilation[0], stride[0], ho)
        for j in range(kw):
            cols = _tap_slice(j * dilation[1], stride[1], wo)
            diff = (xg[:, :, :, :, rows, cols] - wg[:, :, :, :, i, j, None, None]).abs()
            terms.append(diff.sum(3) if cg > 1 else diff.squeeze(3))
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out.neg().reshape(n, o, ho, wo)


def forward_patch(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int, out_hw: Pair) -> Tensor:
    """Forward on the zero-padded input ``xp``: one reduction over an ``as_strided`` (Cg, kh, kw) patch view."""
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = out_hw
    xp = xp.contiguous()
    sn, sc, sh, sw = xp.stride()
    patches = xp.as_strided(
        (n, groups, 1, cg, kh, kw, ho, wo),
        (sn, cg * sc, 0, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh, stride[1] * sw),
    )
    wg = weight.reshape(1, groups, og, cg, kh, kw, 1, 1)
    return (patches - wg).abs().sum((3, 4, 5)).neg().reshape(n, o, ho, wo)


def forward_tap_accumulate(acc: Tensor, xt: Tensor, wt: Tensor, groups: int) -> None:
    """``acc -= sum_c |xt - wt|`` for one kernel tap (in place); xt: (N, C, Ho, Wo) view, wt: (O, Cg)."""
    n, c, ho, wo = xt.shape
    o, cg = wt.shape
    og = o // groups
    diff = (xt.reshape(n, groups, 1, cg, ho, wo) - wt.reshape(1, groups, og, cg, 1, 1)).abs()
    acc.sub_(diff.sum(3).reshape(n, o, ho, wo))


TapKernel = Callable[..., None]


def forward_tapwise(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int, out_hw: Pair,
                    tap_kernel: TapKernel = forward_tap_accumulate) -> Tensor:
    """Forward as one :func:`forward_tap_accumulate` call per tap into a single accumulator.

    Same maths as :func:`forward_taps`, but inductor compiles the small per-tap kernel once per shape (all tap
    views share shape and strides) and only one output-sized buffer is live, instead of the ``k*k`` reduction
    buffers the fused version allocates for dense layers.
    """
    n = xp.shape[0]
    o, cg, kh, kw = weight.shape
    ho, wo = out_hw
    acc = xp.new_zeros(n, o, ho, wo)
    for i in range(kh):
        rows = _tap_slice(i * dilation[0], stride[0], ho)
        for j in range(kw):
            cols = _tap_slice(j * dilation[1], stride[1], wo)
            tap_kernel(acc, xp[:, :, rows, cols], weight[:, :, i, j].contiguous(), groups)
    return acc


def forward_rows(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int, out_hw: Pair) -> Tensor:
    """Pointwise forward (1x1, ``groups == 1``) as an L1 distance matrix: pixels x channels against O x channels.

    ``Y[m, o] = -sum_c |X[m, c] - W[o, c]|`` with m = (n, p) in channels-last order, so the reduction runs over
    the contiguous channel axis. For layers with fewer than ``SMALL_SPATIAL`` output pixels (the late-stage 2x2,
    3x3 maps) the NCHW formulation leaves inductor a spatial inner loop shorter than one vector register.
    """
    n = xp.shape[0]
    o, c = weight.shape[0], weight.shape[1]
    ho, wo = out_hw
    x = xp[:, :, _tap_slice(0, stride[0], ho), _tap_slice(0, stride[1], wo)]
    rows = x.permute(0, 2, 3, 1).reshape(n * ho * wo, 1, c)
    dist = (rows - weight.reshape(1, o, c)).abs().sum(2)
    return dist.neg().reshape(n, ho, wo, o).permute(0, 3, 1, 2).contiguous()


def input_grad_rows(
    x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int, exact: bool
) -> Tensor:
    """Pointwise dX (1x1, stride 1, no padding, ``groups == 1``) in channels-last rows:
    ``dX[m, c] = sum_o g[m, o] * phi(W[o, c] - X[m, c])`` (see :func:`forward_rows`)."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
    g = grad.permute(0, 2, 3, 1).reshape(n * h * w, o, 1)
    dx = (g * _phi(weight.reshape(1, o, c) - rows, exact)).sum(1)
    return dx.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


#: Output pixels below which pointwise layers use the channels-last ``*_rows`` formulations (measured on 2 AVX-512
#: cores, batch 64: 32->192 at 2x2 forward 16.9 ms NCHW vs 0.17 ms rows, dX 3.2 vs 1.1 ms; at 4x4 and above
#: the NCHW formulation is 1.5-15x faster than rows).
SMALL_SPATIAL = 16


# --------------------------------------------------------------------------------------------------------------
# input gradient (gather over stride phases)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _AxisPlan:
    """Phase decomposition of one spatial axis for the dX gather.

    Input position q = stride * a + r (phase r, a in [0, count)); tap t contributes to phase r iff
    (r + pad - t * dil) is divisible by stride, reading output position p = a + offset. ``g`` is zero-padded by
    (lo, hi) so every slice ``[offset + lo, offset + lo + count)`` is in range.
    """

    count: int
    phases: Tuple[Tuple[Tuple[int, int], ...], ...]  # per phase: ((tap, offset), ...)
    lo: int
    hi: int


def _axis_plan(size: int, out_size: int, k: int, stride: int, pad: int, dil: int) -> _AxisPlan:
    count = -(-size // stride)
    phases: List[Tuple[Tuple[int, int], ...]] = []
    offsets: List[int] = []
    for r in range(stride):
        taps = []
        for t in range(k):
            v = r + pad - t * dil
            if v % stride == 0:
                taps.append((t, v // stride))
                offsets.append(v // stride)
        phases.append(tuple(taps))
    lo = max(0, -min(offsets)) if offsets else 0
    hi = max(0, max(offsets) + count - out_size) if offsets else 0
    return _AxisPlan(count, tuple(phases), lo, hi)


def _phi(diff: Tensor, exact: bool) -> Tensor:
    """d(-|x - w|)/dx = sign(w - x) (exact) or AdderNet's HardTanh(w - x)."""
    return diff.sign() if exact else diff.clamp(-1.0, 1.0)


def _phi_(diff: Tensor, exact: bool) -> Tensor:
    """In-place :func:`_phi` (eager path: keeps one budget-sized intermediate alive)."""
    return diff.sign_() if exact else diff.clamp_(-1.0, 1.0)


def input_grad_gather(
    x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int, exact: bool
) -> Tensor:
    """dX = sum g * phi(W - X) as per-(phase, tap) reductions over output channels; no scatter, no im2col."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = grad.shape[2], grad.shape[3]
    ph = _axis_plan(h, ho, kh, stride[0], padding[0], dilation[0])
    pw = _axis_plan(w, wo, kw, stride[1], padding[1], dilation[1])
    hq, wq = ph.count * stride[0], pw.count * stride[1]
    xq = F.pad(x, (0, wq - w, 0, hq - h)) if (hq != h or wq != w) else x
    gp = F.pad(grad, (pw.lo, pw.hi, ph.lo, ph.hi)) if (ph.lo or ph.hi or pw.lo or pw.hi) else grad
    xg = xq.reshape(n, groups, 1, cg, hq, wq)
    gg = gp.reshape(n, groups, og, 1, gp.shape[2], gp.shape[3])
    wg = weight.reshape(1, groups, og, cg, kh, kw)
    rows = []
    for rh in range(stride[0]):
        cols = []
        for rw in range(stride[1]):
            xt = xg[:, :, :, :, rh::stride[0], rw::stride[1]]
            acc = None
            for i, oi in ph.phases[rh]:
                for j, oj in pw.phases[rw]:
                    gt = gg[:, :, :, :, oi + ph.lo: oi + ph.lo + ph.count, oj + pw.lo: oj + pw.lo + pw.count]
                    prod = gt * _phi(wg[:, :, :, :, i, j, None, None] - xt, exact)
                    term = prod.sum(2) if og > 1 else prod.squeeze(2)
                    acc = term if acc is None else acc + term
            if acc is None:  # no tap ever reads this phase (e.g. stride > kernel extent)
                acc = xt.new_zeros(n, groups, cg, ph.count, pw.count)
            cols.append(acc)
        rows.append(torch.stack(cols, -1) if stride[1] > 1 else cols[0].unsqueeze(-1))
    out = torch.stack(rows, -3) if stride[0] > 1 else rows[0].unsqueeze(-3)  # (n, G, cg, A, sh, B, sw)
    out = out.reshape(n, c, hq, wq)
    return out[:, :, :h, :w] if (hq != h or wq != w) else out


def input_grad_tap_accumulate(acc: Tensor, xt: Tensor, gt: Tensor, wt: Tensor, groups: int, exact: bool) -> None:
    """``acc += sum_o gt * phi(wt - xt)`` for one (phase, tap) pair (in place); xt/acc: (N, C, A, B),
    gt: (N, O, A, B) view of padded ``g``, wt: (O, Cg)."""
    n, c, a, b = xt.shape
    o, cg = wt.shape
    og = o // groups
    prod = gt.reshape(n, groups, og, 1, a, b) * _phi(wt.reshape(1, groups, og, cg, 1, 1)
                                                     - xt.reshape(n, groups, 1, cg, a, b), exact)
    acc.add_(prod.sum(2).reshape(n, c, a, b))


def input_grad_tapwise(x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                       groups: int, exact: bool, tap_kernel: TapKernel = input_grad_tap_accumulate) -> Tensor:
    """dX as one :func:`input_grad_tap_accumulate` call per (phase, tap) into a per-phase accumulator.

    Same phase/tap gather as :func:`input_grad_gather`; memory: dX plus one phase buffer (stride > 1).
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho, wo = grad.shape[2], grad.shape[3]
    ph = _axis_plan(h, ho, kh, stride[0], padding[0], dilation[0])
    pw = _axis_plan(w, wo, kw, stride[1], padding[1], dilation[1])
    hq, wq = ph.count * stride[0], pw.count * stride[1]
    xq = F.pad(x, (0, wq - w, 0, hq - h)) if (hq != h or wq != w) else x
    gp = F.pad(grad, (pw.lo, pw.hi, ph.lo, ph.hi)) if (ph.lo or ph.hi or pw.lo or pw.hi) else grad
    single_phase = stride == (1, 1)
    out = x.new_zeros(n, c, hq, wq)
    for rh in range(stride[0]):
        for rw in range(stride[1]):
            if not ph.phases[rh] or not pw.phases[rw]:
                continue  # no tap reads this phase: its gradient is zero
            xt = xq[:, :, rh::stride[0], rw::stride[1]]
            acc = out if single_phase else x.new_zeros(n, c, ph.count, pw.count)
            for i, oi in ph.phases[rh]:
                for j, oj in pw.phases[rw]:
                    gt = gp[:, :, oi + ph.lo: oi + ph.lo + ph.count, oj + pw.lo: oj + pw.lo + pw.count]
                    tap_kernel(acc, xt, gt, weight[:, :, i, j].contiguous(), groups, exact)
            if not single_phase:
                out[:, :, rh::stride[0], rw::stride[1]] = acc
    return out[:, :, :h, :w] if (hq != h or wq != w) else out


def weight_grad_conv(
    x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int
) -> Tensor:
    """dW = sum g * (X - W) = conv2d_weight(X, g) - W * sum_{n,p} g (padding: X = 0, so it is exact)."""
    conv_dw = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups,
        [False, True, False],
    )[1]
    return conv_dw - weight * grad.sum((0, 2, 3)).reshape(-1, 1, 1, 1)


def weight_grad_depthwise_taps(
    x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int
) -> Tensor:
    """Depthwise (one input and one output channel per group) dW as one reduction per tap, for compiling:
    ``dW[c, k] = sum_{n,p} g[n,c,p] * Xpad[n,c,s*p + d*k] - W[c, k] * sum_{n,p} g[n,c,p]`` (the identity of
    :func:`weight_grad_conv`). On few-pixel maps (< ``SMALL_SPATIAL``) the convolution backward spends milliseconds
    per call where these k*k reductions take a tenth of one (336 channels at 1x1: 5.0 ms vs 0.11 ms)."""
    c = x.shape[1]
    kh, kw = weight.shape[2], weight.shape[3]
    ho, wo = grad.shape[2], grad.shape[3]
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    taps = []
    for i in range(kh):
        rows = _tap_slice(i * dilation[0], stride[0], ho)
        for j in range(kw):
            cols = _tap_slice(j * dilation[1], stride[1], wo)
            taps.append((xp[:, :, rows, cols] * grad).sum((0, 2, 3)))
    conv_dw = torch.stack(taps, 1).reshape(c, 1, kh, kw)
    return conv_dw - weight * grad.sum((0, 2, 3)).reshape(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------------------
# eager, chunked, memory-bounded path
# --------------------------------------------------------------------------------------------------------------
DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk sizes along batch / output channels per group / input channels per group."""

    batch: int
    out_channels: int
    in_channels: int
    bytes_per_chunk: int


def plan_chunks(n: int, groups: int, og: int, cg: int, positions: int, itemsize: int,
                budget_bytes: int = DEFAULT_CHUNK_BYTES) -> ChunkPlan:
    """Largest chunk (nb, ob, cb) whose broadcast intermediate nb*G*ob*cb*positions*itemsize fits the budget.

    Grows input channels first (the reduction axis of the forward), then output channels, then batch. The
    smallest possible chunk (1, 1, 1) is returned even when it exceeds the budget (one sample, all groups, all
    positions); its size is reported in ``bytes_per_chunk``.
    """
    unit = groups * positions * itemsize
    cap = max(1, budget_bytes // max(unit, 1))
    cb = min(cg, cap)
    ob = min(og, max(1, cap // cb))
    nb = min(n, max(1, cap // (cb * ob)))
    return ChunkPlan(nb, ob, cb, nb * ob * cb * unit)


def _chunks(total: int, size: int) -> List[slice]:
    return [slice(s, min(s + size, total)) for s in range(0, total, size)]


def eager_forward(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int, out_hw: Pair,
                  budget_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """Chunked eager forward; intermediates bounded by ``budget_bytes`` (see :func:`plan_chunks`)."""
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = out_hw
    plan = plan_chunks(n, groups, og, cg, ho * wo, xp.element_size(), budget_bytes)
    xg = xp.reshape(n, groups, 1, cg, hp, wp)
    wg = weight.reshape(1, groups, og, cg, kh, kw)
    out = xp.new_zeros(n, groups, og, ho, wo)
    for i in range(kh):
        rows = _tap_slice(i * dilation[0], stride[0], ho)
        for j in range(kw):
            cols = _tap_slice(j * dilation[1], stride[1], wo)
            for sn in _chunks(n, plan.batch):
                for so in _chunks(og, plan.out_channels):
                    acc = out[sn, :, so]
                    for sc in _chunks(cg, plan.in_channels):
                        diff = xg[sn, :, :, sc, rows, cols] - wg[:, :, so, sc, i, j, None, None]
                        acc.sub_(diff.abs_().sum(3))
    return out.reshape(n, o, ho, wo)


def eager_input_grad(x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                     groups: int, exact: bool, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """Chunked eager dX (same phase/tap gather as :func:`input_grad_gather`)."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = grad.shape[2], grad.shape[3]
    ph = _axis_plan(h, ho, kh, stride[0], padding[0], dilation[0])
    pw = _axis_plan(w, wo, kw, stride[1], padding[1], dilation[1])
    hq, wq = ph.count * stride[0], pw.count * stride[1]
    xq = F.pad(x, (0, wq - w, 0, hq - h))
    gp = F.pad(grad, (pw.lo, pw.hi, ph.lo, ph.hi))
    xg = xq.reshape(n, groups, 1, cg, hq, wq)
    gg = gp.reshape(n, groups, og, 1, gp.shape[2], gp.shape[3])
    wg = weight.reshape(1, groups, og, cg, kh, kw)
    plan = plan_chunks(n, groups, og, cg, ph.count * pw.count, x.element_size(), budget_bytes)
    out = x.new_zeros(n, groups, cg, hq, wq)
    for rh in range(stride[0]):
        for rw in range(stride[1]):
            xt = xg[:, :, :, :, rh::stride[0], rw::stride[1]]
            dst = out[:, :, :, rh::stride[0], rw::stride[1]]
            for i, oi in ph.phases[rh]:
                for j, oj in pw.phases[rw]:
                    gt = gg[:, :, :, :, oi + ph.lo: oi + ph.lo + ph.count, oj + pw.lo: oj + pw.lo + pw.count]
                    for sn in _chunks(n, plan.batch):
                        for sc in _chunks(cg, plan.in_channels):
                            acc = dst[sn, :, sc]
                            for so in _chunks(og, plan.out_channels):
                                diff = wg[:, :, so, sc, i, j, None, None] - xt[sn, :, :, sc]
                                prod = _phi_(diff, exact).mul_(gt[sn, :, so])
                                acc.add_(prod.sum(2))
    return out.reshape(n, c, hq, wq)[:, :, :h, :w]


def eager_weight_grad_exact(x: Tensor, weight: Tensor, grad: Tensor, stride: Pair, padding: Pair,
                            dilation: Pair, groups: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """True derivative dW = sum g * sign(X - W) (``exact`` mode; verification only), chunked."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ho, wo = grad.shape[2], grad.shape[3]
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    xg = xp.reshape(n, groups, 1, cg, xp.shape[2], xp.shape[3])
    gg = grad.reshape(n, groups, og, 1, ho, wo)
    wg = weight.reshape(1, groups, og, cg, kh, kw)
    plan = plan_chunks(n, groups, og, cg, ho * wo, x.element_size(), budget_bytes)
    out = weight.new_zeros(groups, og, cg, kh, kw)
    for i in range(kh):
        rows = _tap_slice(i * dilation[0], stride[0], ho)
        for j in range(kw):
            cols = _tap_slice(j * dilation[1], stride[1], wo)
            for so in _chunks(og, plan.out_channels):
                for sc in _chunks(cg, plan.in_channels):
                    acc = out[:, so, sc, i, j]
                    for sn in _chunks(n, plan.batch):
                        diff = xg[sn, :, :, sc, rows, cols] - wg[:, :, so, sc, i, j, None, None]
                        acc.add_((diff.sign_().mul_(gg[sn, :, so])).sum((0, 4, 5)))
    return out.reshape(o, cg, kh, kw)


def adaptive_scale(dw: Tensor, eta: float) -> Tensor:
    """AdderNet adaptive learning-rate scaling: eta * sqrt(numel(W)) / max(||dW||_2, 1e-12) * dW."""
    norm = torch.linalg.vector_norm(dw).clamp_min(1e-12)
    return dw * (eta * math.sqrt(dw.numel()) / norm)
