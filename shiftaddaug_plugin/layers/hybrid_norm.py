"""Hybrid batch norms: target channels normalised alone, augmented channels with their own statistics (eq. 4).

The maths and notation are in :mod:`shiftaddaug_plugin.layers.hybrid`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modes import Mode

__all__ = ["HybridBatchNorm2d", "HybridBatchNormAct2d"]


class HybridBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm widened with its hybrid conv (docs/algorithms.md §3): the leading ``x.shape[1]`` channels are used.

    ``num_features`` is the maximum width. ``forward`` slices ``weight``, ``bias``, ``running_mean`` and
    ``running_var`` to the input's channel count; the running statistics of that leading slice are updated in place
    (the rest stay untouched); ``num_batches_tracked`` is shared. In ``Mode.TARGET`` the input must have exactly
    ``target_num_features`` channels. :meth:`export` returns an ``nn.BatchNorm2d`` with cloned target slices.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_num_features: int,
    ) -> None:
        if not 1 <= target_num_features <= num_features:
            raise ValueError(f"target_num_features={target_num_features} must lie in [1, num_features={num_features}]")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.target_num_features = int(target_num_features)
        self.mode = Mode.AUGMENTED

    def _batch_norm(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        c = x.shape[1]
        if self.mode == Mode.TARGET and c != self.target_num_features:
            raise ValueError(f"{type(self).__name__} in TARGET mode expects {self.target_num_features} channels, "
                             f"got {c}")
        if not 1 <= c <= self.num_features:
            raise ValueError(f"{type(self).__name__} has at most {self.num_features} channels, got {c}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        # basic slices of contiguous 1-D buffers are views: batch_norm's in-place update reaches the buffers
        running_mean = self.running_mean[:c] if track and self.running_mean is not None else None
        running_var = self.running_var[:c] if track and self.running_var is not None else None
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, factor, self.eps)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        return self._batch_norm(x)

    def _export_bn(self, out: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
        with torch.no_grad():
            if self.weight is not None:
                out.weight.copy_(self.weight[:n].detach())
                out.bias.copy_(self.bias[:n].detach())
            if self.running_mean is not None:
                out.running_mean.copy_(self.running_mean[:n])
                out.running_var.copy_(self.running_var[:n])
                out.num_batches_tracked.copy_(self.num_batches_tracked)
        return out.train(self.training)

    def _export_width(self, num_features: int | None) -> int:
        n = self.target_num_features if num_features is None else int(num_features)
        if not 1 <= n <= self.num_features:
            raise ValueError(f"export(num_features={n}) must lie in [1, {self.num_features}]")
        return n

    def export(self, num_features: int | None = None) -> nn.Module:
        """New ``nn.BatchNorm2d`` of ``num_features`` (default ``target_num_features``) with cloned leading slices."""
        n = self._export_width(num_features)
        out = nn.BatchNorm2d(n, self.eps, self.momentum, self.affine, self.track_running_stats,
                             device=self.running_mean.device if self.running_mean is not None else self.weight.device,
                             dtype=self.weight.dtype if self.weight is not None else None)
        return self._export_bn(out, n)

    def fuse(self) -> nn.Module:
        """timm ``reparameterize_model`` hook: returns :meth:`export`."""
        return self.export()

    def reparameterize(self) -> nn.Module:
        """Alias of :meth:`export`."""
        return self.export()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target_num_features={self.target_num_features}, mode={self.mode.value}"


class HybridBatchNormAct2d(HybridBatchNorm2d):
    """Hybrid version of timm's ``BatchNormAct2d`` (BN + drop + activation in one module), docs/algorithms.md §3.

    Same slicing as :class:`HybridBatchNorm2d`; keeps timm's ``drop`` and ``act`` children. Build it from an
    existing timm module with :meth:`from_timm` (keeps copies of its ``act``/``drop``) or directly with timm's
    arguments (``act_layer`` etc., resolved through timm, imported lazily). :meth:`export` returns a timm
    ``BatchNormAct2d`` of target width with copies of ``act``/``drop``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        apply_act: bool = True,
        act_layer: Any = nn.ReLU,
        act_kwargs: Mapping[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: type[nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        target_num_features: int,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype,
                         target_num_features=target_num_features)
        self.drop: nn.Module = drop_layer() if drop_layer is not None else nn.Identity()
        act: nn.Module | None = None
        if apply_act and act_layer is not None:
            from timm.layers import create_act_layer

            kwargs = dict(act_kwargs or {})
            kwargs.setdefault("inplace", inplace)
            act = create_act_layer(act_layer, **kwargs)
        self.act: nn.Module = nn.Identity() if act is None else act

    @classmethod
    def from_timm(cls, module: nn.Module, num_features: int, target_num_features: int) -> "HybridBatchNormAct2d":
        """Widen a timm ``BatchNormAct2d``: copies of its ``act``/``drop``, its statistics and affine parameters in
        the leading ``module.num_features`` channels (the rest at BN defaults: weight 1, bias 0, mean 0, var 1)."""
        import copy

        if not isinstance(module, nn.BatchNorm2d) or not hasattr(module, "act"):
            raise TypeError(f"from_timm expects a timm BatchNormAct2d, got {type(module).__name__}")
        if num_features < module.num_features:
            raise ValueError(f"num_features={num_features} is narrower than the module ({module.num_features})")
        out = cls(num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                  apply_act=False, device=module.weight.device if module.weight is not None else None,
                  dtype=module.weight.dtype if module.weight is not None else None,
                  target_num_features=target_num_features)
        out.act = copy.deepcopy(module.act)
        out.drop = copy.deepcopy(getattr(module, "drop", nn.Identity()))
        n = module.num_features
        with torch.no_grad():
            if module.weight is not None:
                out.weight[:n].copy_(module.weight)
                out.bias[:n].copy_(module.bias)
            if module.running_mean is not None:
                out.running_mean[:n].copy_(module.running_mean)
                out.running_var[:n].copy_(module.running_var)
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        return out.train(module.training)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - BN (sliced) -> drop -> act, as timm
        return self.act(self.drop(self._batch_norm(x)))

    def export(self, num_features: int | None = None) -> nn.Module:
        """New timm ``BatchNormAct2d`` of ``num_features`` (default target) with cloned slices, ``act``/``drop``."""
        import copy

        from timm.layers import BatchNormAct2d

        n = self._export_width(num_features)
        out = BatchNormAct2d(n, self.eps, self.momentum, self.affine, self.track_running_stats, apply_act=False,
                             device=self.running_mean.device if self.running_mean is not None else self.weight.device,
                             dtype=self.weight.dtype if self.weight is not None else None)
        out.act = copy.deepcopy(self.act)
        out.drop = copy.deepcopy(self.drop)
        return self._export_bn(out, n)
