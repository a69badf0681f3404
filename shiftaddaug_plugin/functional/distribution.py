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

__all__ = ["gauss_to_laplace", "gauss_to_laplace_matched", "laplace_to_gauss_matched", "laplace_scale", "gauss_scale"]


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


def gauss_to_laplace(w: Tensor, b: float | Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Map a (roughly) Gaussian tensor onto a Laplace distribution of the same mean (ShiftAddAug eq. 5).

    ``r(w) = ppf_Laplace(cdf_Gauss(w))`` with ``u = clamp(Phi((w - mu) / sigma), eps, 1 - eps)`` and
    ``r = mu - b * sign(u - 1/2) * ln(1 - 2|u - 1/2|)``.

    Args:
        w: weights (any shape, at least two elements for a standard deviation).
        b: Laplace scale. ``None`` -> ``sigma / sqrt(2)`` (variance match: Var(Laplace(b)) = 2 b^2 = sigma^2).
            A float or a 0-d tensor fixes it (prior knowledge, docs/algorithms.md §5).
        eps: clamp of ``u`` away from 0 and 1, where the Laplace ppf diverges; bounds ``|r - mu|`` by
            ``-b * ln(2 * eps)`` (about ``13.1 b`` at the default).

    ``mu`` and ``sigma`` are taken from ``w`` *detached*: the gradient flows through ``u`` only. The maths runs in
    at least fp32 (float16/bfloat16 inputs are upcast, float64 stays float64) and the result has ``w``'s dtype.
    Implementation note: ``1 - 2|u - 1/2| = 2 * Phi(-|z|)`` and ``sign(u - 1/2) = sign(z)`` for ``z = (w - mu) /
    sigma``; evaluating ``ln(2 Phi(-|z|))`` with ``log_ndtr`` gives the same values as the formula above (with the
    same clamp) without the cancellation ``1 - Phi(z)`` suffers in fp32 for large ``z``, and finite gradients
    everywhere.
    """
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"gauss_to_laplace expects a floating-point tensor, got {type(w).__name__}"
                        f"{'' if not isinstance(w, Tensor) else ' of dtype ' + str(w.dtype)}")
    if w.numel() < 2:
        raise ValueError(f"gauss_to_laplace needs at least 2 weights to estimate mu/sigma, got shape {tuple(w.shape)}")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}; the default 1e-6 is a good choice")
    compute_dtype = torch.promote_types(w.dtype, torch.float32)
    x = w.to(compute_dtype)
    with torch.no_grad():
        mu = x.mean()
        sigma = x.std().clamp_min(torch.finfo(compute_dtype).tiny)
    if b is None:
        scale: Tensor | float = sigma / math.sqrt(2.0)
    elif isinstance(b, Tensor):
        scale = b.to(compute_dtype)
    else:
        if not b > 0:
            raise ValueError(f"Laplace scale b must be > 0, got {b}; leave b=None for the variance match sigma/sqrt(2)")
        scale = float(b)
    z = (x - mu) / sigma
    # ln(1 - 2|u - 1/2|) with u clamped to [eps, 1 - eps]  ==  max(ln 2 + log Phi(-|z|), ln(2 eps))
    log_tail = torch.special.log_ndtr(-z.abs()).clamp_min(math.log(eps)) + math.log(2.0)
    r = mu - scale * torch.sign(z) * log_tail
    return r.to(w.dtype)
