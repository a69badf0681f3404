"""Quantile matching between the Gaussian (multiplicative) and Laplace (adder) weight domains.

ShiftAddAug eq. 5 maps a multiplicatively trained weight ``w`` onto the adder's weight distribution by
``r(w) = F_Laplace^{-1}(Phi((w - mu_g) / sigma_g))``. Written with explicit statistics of both domains:

    gauss -> laplace:  ``z = (w - mu_g) / sigma_g``,  ``r = mu_l - b * sign(z) * ln(2 * Phi(-|z|))``
    laplace -> gauss:  ``t = (w - mu_l) / b``,  ``r = mu_g + sigma_g * sign(t) * Phi^{-1}(1 - exp(-|t|) / 2)``

(``ln(1 - 2|u - 1/2|) = ln(2 Phi(-|z|))`` for ``u = Phi(z)``; the second line is the exact inverse of the first).
Both maps are strictly increasing, so they keep the order of the weights (and the rank of any channel inside its
domain) and change only the shape and scale of the distribution. The tails are clamped at ``u`` in
``[eps, 1 - eps]`` so a value never leaves ``mu +- 13 b`` (Laplace) or ``mu +- 4.75 sigma`` (Gaussian) at the default
``eps = 1e-6``. The maths runs in at least fp32; the result has the input's dtype.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gauss_to_laplace_matched", "laplace_to_gauss_matched", "laplace_scale", "gauss_scale"]


def _checked(w: Tensor, sigma_g: float, b: float, eps: float) -> Tensor:
    """``w`` upcast to at least fp32, after checking the tensor, both scales and ``eps``."""
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {type(w).__name__}")
    for scale in (sigma_g, b):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    return w.to(torch.promote_types(w.dtype, torch.float32))


def gauss_to_laplace_matched(w: Tensor, mu_g: float, sigma_g: float, mu_l: float, b: float,
                             eps: float = 1e-6) -> Tensor:
    """Map ``w ~ N(mu_g, sigma_g^2)`` onto ``Laplace(mu_l, b)`` by quantile matching (eq. 5, module docstring)."""
    x = _checked(w, sigma_g, b, eps)
    z = (x - mu_g) / sigma_g
    log_tail = torch.special.log_ndtr(-z.abs()).clamp_min(math.log(eps)) + math.log(2.0)
    return (mu_l - b * torch.sign(z) * log_tail).to(w.dtype)


def laplace_to_gauss_matched(w: Tensor, mu_l: float, b: float, mu_g: float, sigma_g: float,
                             eps: float = 1e-6) -> Tensor:
    """Inverse of :func:`gauss_to_laplace_matched`: ``Laplace(mu_l, b)`` onto ``N(mu_g, sigma_g^2)``."""
    x = _checked(w, sigma_g, b, eps)
    t = (x - mu_l) / b
    tail = (0.5 * torch.exp(-t.abs())).clamp_min(eps)  # = Phi(-|z|) of the matching Gaussian quantile
    z_abs = -torch.special.ndtri(tail)
    return (mu_g + sigma_g * torch.sign(t) * z_abs).to(w.dtype)


def laplace_scale(w: Tensor) -> tuple[float, float]:
    """Maximum-likelihood ``(mu, b)`` of a Laplace fit: the median and the mean absolute deviation from it."""
    x = w.detach().to(torch.float64).flatten()
    if x.numel() < 2:
        raise ValueError(f"need at least 2 weights to fit a Laplace distribution, got {x.numel()}")
    mu = x.median()
    return float(mu), max(float((x - mu).abs().mean()), 1e-12)


def gauss_scale(w: Tensor) -> tuple[float, float]:
    """``(mean, standard deviation)`` of ``w`` (the Gaussian fit)."""
    x = w.detach().to(torch.float64).flatten()
    if x.numel() < 2:
        raise ValueError(f"need at least 2 weights to fit a Gaussian, got {x.numel()}")
    return float(x.mean()), max(float(x.std()), 1e-12)
