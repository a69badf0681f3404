"""The weight remaps of heterogeneous weight sharing (ShiftAddAug eq. 5, docs/algorithms.md §5).

Hybrid layers store one weight tensor shared by the multiplicative augmented channels and the multiplication-free
target channels. Multiplicative weights are (roughly) Gaussian, AdderNet weights (roughly) Laplacian, so an adder
layer with a remap reads ``W_l = r(FC(W_g))`` instead of the stored ``W_g``, with ``r = ppf_Laplace(cdf_Gauss(.))``
(:func:`shiftaddaug_plugin.functional.distribution.gauss_to_laplace`). Shift layers need no remap: they read the
stored weight through power-of-two rounding.

* :class:`WeightRemap` — ``r o FC`` with a small per-layer ``FC`` (one ``k*k -> k*k`` linear map applied to every
  filter's flattened kernel, identity-initialised) and a persistent ``frozen`` flag; how ``FC`` is pre-trained is
:func:`shiftaddaug_plugin.sharing.pretrain_remap`; * :class:`PiecewiseRemap` — prior art to compare against
(ShiftAddNAS): a learnable 100-bin monotone piecewise-linear
  transform trained jointly with a KL-to-Laplace penalty.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..functional.distribution import gauss_to_laplace

__all__ = ["WeightRemap", "PiecewiseRemap"]


class WeightRemap(nn.Module):
    """``W_l = r(FC(W_g))`` for one hybrid adder layer (ShiftAddAug eq. 5, docs/algorithms.md §5).

    ``FC`` (design choice, the paper only says "a small per-layer FC"): one ``k*k -> k*k`` linear map (weight +
    bias) shared by all filters of the layer and applied to each filter's flattened ``k x k`` kernel, initialised to
    the identity (weight ``I``, bias 0), so an untrained remap is exactly ``r``. It has ``k^4 + k^2`` parameters
    (2 for a 1x1 layer, 90 for 3x3) and mixes the taps of a kernel, independent of the channel counts so it works
    for any width the hybrid layer is sliced to. ``r`` is :func:`gauss_to_laplace` with ``b`` and ``eps``.
    With ``fc=False`` the remap is the fixed ``r`` only.

    ``frozen`` (persistent buffer, saved in checkpoints): when true the FC parameters have ``requires_grad=False``.
    Pre-train with :func:`pretrain_remap`, which freezes the remaps at the end; augmented training then keeps them
    fixed (docs/algorithms.md §5). ``load_state_dict`` re-applies the stored frozen flag to ``requires_grad``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        *,
        b: float | None = None,
        eps: float = 1e-6,
        fc: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if kh < 1 or kw < 1:
            raise ValueError(f"kernel_size must be positive, got {kernel_size}")
        if b is not None and not b > 0:
            raise ValueError(f"Laplace scale b must be > 0, got {b}; use b=None for the variance match sigma/sqrt(2)")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}; the default 1e-6 is a good choice")
        self.kernel_size = (int(kh), int(kw))
        self.b = b
        self.eps = eps
        numel = self.kernel_size[0] * self.kernel_size[1]
        self.fc: nn.Linear | None
        if fc:
            self.fc = nn.Linear(numel, numel, bias=True, device=device, dtype=dtype)
            with torch.no_grad():
                self.fc.weight.copy_(torch.eye(numel, device=self.fc.weight.device, dtype=self.fc.weight.dtype))
                self.fc.bias.zero_()
        else:
            self.fc = None
        self.frozen_flag: Tensor
        self.register_buffer("frozen_flag", torch.tensor(False, device=device), persistent=True)

    @property
    def frozen(self) -> bool:
        """Whether the FC parameters are fixed (``requires_grad=False``)."""
        return bool(self.frozen_flag.item())

    def freeze(self) -> "WeightRemap":
        """Fix the FC parameters (done by :func:`pretrain_remap` after pre-training)."""
        self.frozen_flag.fill_(True)
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def unfreeze(self) -> "WeightRemap":
        """Make the FC parameters trainable again."""
        self.frozen_flag.fill_(False)
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for p in self.parameters():
            p.requires_grad_(not self.frozen)

    def forward(self, weight: Tensor) -> Tensor:
        """Remap a conv weight of shape ``(out, in/groups, kh, kw)``: ``r(FC(weight))``, same shape and dtype."""
        if weight.dim() != 4 or tuple(weight.shape[-2:]) != self.kernel_size:
            raise ValueError(
                f"WeightRemap for kernel {self.kernel_size} got a weight of shape {tuple(weight.shape)}; "
                "build the remap with the conv's kernel_size"
            )
        x = weight
        if self.fc is not None:
            flat = weight.reshape(-1, self.kernel_size[0] * self.kernel_size[1])
            x = nn.functional.linear(flat.to(self.fc.weight.dtype), self.fc.weight, self.fc.bias)
            x = x.reshape(weight.shape).to(weight.dtype)
        return gauss_to_laplace(x, b=self.b, eps=self.eps)

    def extra_repr(self) -> str:
        b = "sigma/sqrt(2)" if self.b is None else f"{self.b:g}"
        fc = self.fc is not None
        return f"kernel_size={self.kernel_size}, b={b}, eps={self.eps:g}, fc={fc}, frozen={self.frozen}"


class PiecewiseRemap(nn.Module):
    """ShiftAddNAS-style learnable remap (prior art to compare with, docs/algorithms.md §5): a monotone piecewise-linear
    map.

    ``W_l = mu + sigma * f((W_g - mu) / sigma)`` with ``mu``/``sigma`` of ``W_g`` (detached) and ``f`` continuous,
    piecewise linear on ``num_bins`` equal bins of ``[-bound, bound]`` (in sigmas), linear beyond the edges with
    the edge slopes. The slopes are ``exp(log_slopes)`` (positive: ``f`` stays monotone) and start at 1, so an
    untrained map is the identity. Train it jointly with the network and add ``weight * kl_to_laplace(W_l)``
    to the loss to pull the remapped weights towards a Laplace distribution (ShiftAddNAS' KL penalty).
    Works on any weight shape; usable as ``HybridConv2d(op='adder', remap=PiecewiseRemap())``. It is not touched
    by :func:`pretrain_remap` (which pre-trains :class:`WeightRemap`).
    """

    def __init__(self, num_bins: int = 100, bound: float = 4.0, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if not bound > 0:
            raise ValueError(f"bound must be > 0 (in standard deviations), got {bound}")
        self.num_bins = int(num_bins)
        self.bound = float(bound)
        self.log_slopes = nn.Parameter(torch.zeros(num_bins, device=device, dtype=dtype))

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return x.mean(), x.std().clamp_min(torch.finfo(x.dtype).tiny)

    def forward(self, weight: Tensor) -> Tensor:
        """``mu + sigma * f(z)``, same shape and dtype as ``weight`` (maths in at least fp32)."""
        if weight.numel() < 2:
            raise ValueError(f"PiecewiseRemap needs at least 2 weights, got shape {tuple(weight.shape)}")
        compute = torch.promote_types(weight.dtype, torch.float32)
        x = weight.to(compute)
        mu, sigma = self._stats(x)
        z = (x - mu) / sigma
        h = 2.0 * self.bound / self.num_bins
        slopes = self.log_slopes.to(compute).exp()
        knots = torch.cat([slopes.new_zeros(1), torch.cumsum(slopes * h, 0)]) - self.bound  # f at the bin edges
        idx = torch.floor((z.detach() + self.bound) / h).clamp(0, self.num_bins - 1).long()
        left = idx.to(compute) * h - self.bound
        f = knots[idx] + slopes[idx] * (z - left)
        return (mu + sigma * f).to(weight.dtype)

    @staticmethod
    def kl_to_laplace(weight: Tensor, num_bins: int = 100, bound: float = 6.0, b: float | None = None) -> Tensor:
        """Differentiable ``KL(P || Laplace)`` of the weights' distribution (ShiftAddNAS' penalty).

        ``P``: soft histogram of ``(weight - mu) / b`` on ``num_bins`` bins over ``[-bound, bound]`` (linear
        interpolation between the two nearest bin centres, values beyond the outer centres count in the edge bins);
        ``Laplace``: the standard Laplace mass of each bin (tails folded into the edge bins). ``mu`` is the weights'
        mean and ``b`` defaults to ``sigma / sqrt(2)`` (both detached). Returns a 0-d fp32 tensor >= 0.
        """
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        x = weight.float().reshape(-1)
        with torch.no_grad():
            mu = x.mean()
            scale = x.std().clamp_min(1e-12) / math.sqrt(2.0) if b is None else torch.tensor(float(b))
        h = 2.0 * bound / num_bins
        pos = (((x - mu) / scale + bound) / h - 0.5).clamp(0.0, num_bins - 1.0)  # in bin-centre units
        lower = pos.detach().floor().clamp(max=num_bins - 2).long()
        frac = pos - lower.to(pos.dtype)
        p = torch.zeros(num_bins, device=x.device, dtype=x.dtype)
        p = p.index_add(0, lower, 1.0 - frac).index_add(0, lower + 1, frac) + 1e-8
        p = p / p.sum()
        edges = torch.linspace(-bound, bound, num_bins + 1, device=x.device, dtype=torch.float64)
        cdf = torch.where(edges < 0, 0.5 * torch.exp(edges), 1.0 - 0.5 * torch.exp(-edges))
        cdf[0], cdf[-1] = 0.0, 1.0
        q = (cdf[1:] - cdf[:-1]).float().clamp_min(1e-12)
        return (p * (p.log() - q.log())).sum()

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, bound={self.bound:g}"
