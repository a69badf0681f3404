"""Heterogeneous weight sharing (ShiftAddAug eq. 5, docs/algorithms.md §5).

Hybrid layers store one weight tensor that is shared between the multiplicative augmented channels and the
multiplication-free target channels. Multiplicative weights are (roughly) Gaussian, AdderNet weights are
(roughly) Laplacian, so an adder layer does not read the stored weight ``W_g`` directly but a remapped copy

    ``W_l = r(FC(W_g))``,   ``r(x) = ppf_Laplace(cdf_Gauss(x))``,

with ``u = clamp(Phi((x - mu) / sigma), eps, 1 - eps)`` and ``r = mu - b * sign(u - 1/2) * ln(1 - 2|u - 1/2|)``.
``mu`` and ``sigma`` are the (detached) mean and standard deviation of the remapped tensor, ``b`` the Laplace scale
(default ``sigma / sqrt(2)``: same variance as the Gaussian). Shift layers do not use this: they read the stored
weight through power-of-two rounding.

* :func:`gauss_to_laplace` — the closed-form ``r`` (fp32 maths, numerically safe at the tails);
* :class:`WeightRemap` — ``r ∘ FC`` with a small per-layer ``FC`` (one ``k*k -> k*k`` linear map applied to every
  filter's flattened kernel, identity-initialised), and a persistent ``frozen`` flag;
* :func:`pretrain_remap` — how ``FC`` is pre-trained: a few optimiser steps on the task loss of the target network
  with everything except the remap parameters frozen, after which the remaps are frozen for augmented training;
* :class:`PiecewiseRemap` — prior art to compare against (ShiftAddNAS): a learnable 100-bin monotone piecewise-linear
  transform trained jointly with a KL-to-Laplace penalty.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["gauss_to_laplace", "WeightRemap", "PiecewiseRemap", "pretrain_remap", "remap_modules"]


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
    """ShiftAddNAS-style learnable remap (prior art to compare with, docs/algorithms.md §5): a monotone piecewise-linear map.

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


def remap_modules(model: nn.Module) -> list[nn.Module]:
    """The hybrid adder / shift-add layers of ``model`` that carry a :class:`WeightRemap` (in module order)."""
    from ..layers.hybrid import HybridConv2d  # local: hybrid imports this module

    return [m for m in model.modules() if isinstance(m, HybridConv2d) and isinstance(m.remap, WeightRemap)]


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"pretrain_remap expects the loader to yield (inputs, targets) pairs, got {type(batch).__name__}; "
        "wrap the loader so that it does"
    )


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader`` again and again; ``ValueError`` if one full pass yields nothing (would loop forever)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("pretrain_remap got an empty loader; pass a loader that yields (inputs, targets)")


def pretrain_remap(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: Callable[[Any, Any], Tensor],
    steps: int,
    lr: float = 1e-3,
) -> list[float]:
    """Pre-train the ``FC`` of every hybrid adder layer's :class:`WeightRemap`, then freeze them (docs/algorithms.md §5).

    This is how ``FC`` of eq. 5 is pre-trained: the model runs in ``Mode.TARGET`` with the MF operators enabled
    (``mf_enabled=True`` on the remapped layers for the duration, so the adders really read ``r(FC(W))``) and
    Adam(``lr``) optimises only the remap parameters on ``loss_fn(model(inputs), targets)`` for ``steps`` batches
    (the loader is restarted when exhausted). Every other parameter has ``requires_grad`` off during the run; BN
    layers run on batch statistics (train mode) but all buffers are restored afterwards, so nothing but the remap
    parameters changes. Requires-grad flags, train/eval state, modes and ``mf_enabled`` are restored, and the remaps
    end frozen (``requires_grad=False``, ``frozen=True``). Returns the loss of every step.

    Raises ``ValueError`` if the model has no remapped adder layer or ``steps < 1``, ``FloatingPointError`` on a
    non-finite loss (the model is restored first).
    """
    from ..modes import Mode, set_mode

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    layers = remap_modules(model)
    if not layers:
        raise ValueError(
            "pretrain_remap found no hybrid adder layer with a WeightRemap; build HybridConv2d(op='adder' or "
            "'shiftadd', remap=True) (or convert with remap enabled) first"
        )
    remaps: list[WeightRemap] = []
    for layer in layers:
        if not any(layer.remap is r for r in remaps):
            remaps.append(layer.remap)
    remap_params = [p for r in remaps for p in r.parameters()]
    if not remap_params:
        raise ValueError("the WeightRemaps have no FC parameters (fc=False); there is nothing to pre-train")

    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    mf_flags = [(layer, layer.mf_enabled) for layer in layers]
    was_training = model.training
    device = remap_params[0].device
    losses: list[float] = []
    try:
        for p, _ in requires_grad:
            p.requires_grad_(False)
        for r in remaps:
            r.unfreeze()
        for layer in layers:
            layer.mf_enabled = True
        optimizer = torch.optim.Adam(remap_params, lr=lr)
        model.train()
        with set_mode(model, Mode.TARGET):
            for _, batch in zip(range(steps), _cycle(loader)):
                inputs, targets = _split_batch(batch)
                inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                loss = loss_fn(model(inputs), targets)
                if not torch.isfinite(loss.detach()).all():
                    raise FloatingPointError(f"pretrain_remap: non-finite loss {loss.item()} at step {len(losses)}; "
                                             "lower lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        for layer, flag in mf_flags:
            layer.mf_enabled = flag
        model.train(was_training)
        for r in remaps:
            r.freeze()
    return losses
