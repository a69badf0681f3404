"""Stage 1: weight-sharing multiplicative supernet (OFA / TinyNAS style; ShiftAddAug §3.4, docs/algorithms.md §7).

One network holds the largest member of a :class:`~shiftaddaug_plugin.nas.space.SearchSpace`; every architecture
is a slice of it:

* **elastic kernel**: the depthwise weight is stored at the largest kernel (7x7); a k x k kernel is the centre
  crop of the next larger *active* kernel, optionally passed through a learned per-layer transform matrix
  (``(k^2, k^2)``, identity at initialisation; OFA's kernel transform) -- ``kernel_transform=True``.
* **elastic expand ratio**: the mid channels of a block are the leading ``make_divisible(in * e)`` channels of the
  expand / depthwise / project weights (timm's ``InvertedResidual`` rule, so extraction is exact).
* **elastic depth**: a stage runs its first ``d`` blocks.
* **elastic width**: a stage's blocks output the leading ``w`` channels; the next layer reads the leading input
  channels (its input width is taken from the incoming tensor).
* batch norms slice their affine parameters and running statistics (the leading channels).

:meth:`Supernet.set_active` selects an architecture; :meth:`Supernet.extract` returns the standalone timm
``EfficientNet`` of that architecture (``shiftadd_custom``'s network) with the shared weights copied in: its output
equals the supernet's for the same architecture (tested). Module names match timm's (``conv_stem``, ``bn1``,
``blocks.<stack>.<i>.conv_pw`` ...), which is what the extraction maps by.

Training rule (:func:`train_supernet`): the **sandwich rule** (BigNAS / "universally slimmable" networks): each
step accumulates the gradients of the largest, the smallest and ``num_random`` (default 2) random architectures
and takes one optimizer step. With ``distill=True`` (default) the smaller ones learn from the largest one's soft
predictions (in-place distillation, BigNAS) while the largest one learns from the labels. Chosen over OFA's
progressive shrinking because it needs a single phase and no phase schedule, which suits the short runs here.
Optimizer and schedule come from timm (``create_optimizer_v2``, ``CosineLRScheduler``).
"""
from __future__ import annotations

import math
import random
import time
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_write
from .custom_model import build_efficientnet
from .data import iterate_batches
from .space import Arch, SearchSpace

__all__ = [
    "DynamicConv2d",
    "DynamicDepthwiseConv2d",
    "DynamicBatchNorm2d",
    "DynamicLinear",
    "Supernet",
    "train_supernet",
    "evaluate_accuracy",
    "save_supernet",
    "load_supernet",
]


def _mid_channels(in_chs: int, expand: float) -> int:
    from timm.layers import make_divisible

    return int(make_divisible(in_chs * expand))


# ================================================================================================ dynamic layers
class DynamicConv2d(nn.Module):
    """Dense conv (``groups=1``) of a fixed kernel whose output / input widths are leading slices of the weight."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.active_out = max_out

    def weight_for(self, out_chs: int, in_chs: int) -> Tensor:
        if out_chs > self.weight.shape[0] or in_chs > self.weight.shape[1]:
            raise ValueError(f"requested {out_chs}x{in_chs} channels from a {tuple(self.weight.shape[:2])} conv")
        return self.weight[:out_chs, :in_chs]

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.conv2d(x, self.weight_for(self.active_out, x.shape[1]), None, self.stride, self.kernel_size // 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, k={self.kernel_size}, s={self.stride}"


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic kernel (centre crops of the largest kernel, optional transform) and channels."""

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int = 1,
                 kernel_transform: bool = False) -> None:
        super().__init__()
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict()
        if kernel_transform:
            for k in self.kernel_choices[:-1]:
                self.transforms[f"{k}"] = nn.Parameter(torch.eye(k * k))
        self.active_kernel = self.max_kernel

    def weight_for(self, channels: int, kernel: int) -> Tensor:
        """``(channels, 1, kernel, kernel)``: crop the largest kernel down the kernel ladder to ``kernel``."""
        if kernel not in self.kernel_choices:
            raise ValueError(f"kernel {kernel} is not one of {self.kernel_choices}")
        w = self.weight[:channels]
        for k in reversed(self.kernel_choices[:-1]):
            if k < kernel:
                break
            start = (w.shape[-1] - k) // 2
            w = w[:, :, start:start + k, start:start + k]
            if f"{k}" in self.transforms:
                w = (w.reshape(channels, k * k) @ self.transforms[f"{k}"]).reshape(channels, 1, k, k)
        return w

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        c = x.shape[1]
        return F.conv2d(x, self.weight_for(c, self.active_kernel), None, self.stride, self.active_kernel // 2, 1, c)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the leading ``x.shape[1]`` channels (affine parameters and running statistics sliced)."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        c = x.shape[1]
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(
            x, self.running_mean[:c] if self.track_running_stats else None,
            self.running_var[:c] if self.track_running_stats else None,
            self.weight[:c], self.bias[:c], use_batch, factor, self.eps,
        )


class DynamicLinear(nn.Linear):
    """Classifier reading the leading ``x.shape[-1]`` input features."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)


class SuperDSBlock(nn.Module):
    """timm ``DepthwiseSeparableConv`` (``ds_r1_k3_s1_c<ds>_noskip``): dw3x3 -> BN -> ReLU6 -> pw -> BN."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv_dw = DynamicDepthwiseConv2d(in_chs, (3,))
        self.bn1 = DynamicBatchNorm2d(in_chs)
        self.conv_pw = DynamicConv2d(in_chs, out_chs)
        self.bn2 = DynamicBatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = F.relu6(self.bn1(self.conv_dw(x)))
        return self.bn2(self.conv_pw(x))


class SuperInvertedResidual(nn.Module):
    """timm ``InvertedResidual`` with elastic kernel / expand / output width; residual on non-first blocks."""

    def __init__(self, max_in: int, max_out: int, space: SearchSpace, stride: int, first: bool,
                 kernel_transform: bool) -> None:
        super().__init__()
        max_mid = _mid_channels(max_in, space.expand_choices[-1])
        self.stride, self.first = stride, first
        self.conv_pw = DynamicConv2d(max_in, max_mid)
        self.bn1 = DynamicBatchNorm2d(max_mid)
        self.conv_dw = DynamicDepthwiseConv2d(max_mid, space.kernel_choices, stride, kernel_transform)
        self.bn2 = DynamicBatchNorm2d(max_mid)
        self.conv_pwl = DynamicConv2d(max_mid, max_out)
        self.bn3 = DynamicBatchNorm2d(max_out)
        self.active_expand = space.expand_choices[-1]

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        self.conv_pw.active_out = _mid_channels(x.shape[1], self.active_expand)
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        if not self.first:
            if y.shape != x.shape:
                raise RuntimeError(f"residual block got {tuple(x.shape)} but produced {tuple(y.shape)}")
            y = y + x
        return y


# ================================================================================================ supernet
class Supernet(nn.Module):
    """Weight-sharing multiplicative supernet of ``space`` (module docstring).

    Args:
        space: the search space (its largest member is stored).
        num_classes, in_chans: classifier outputs and input channels.
        kernel_transform: OFA kernel transform matrices for the smaller kernels (default off).
    """

    def __init__(self, space: SearchSpace, num_classes: int = 10, in_chans: int = 1,
                 kernel_transform: bool = False) -> None:
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        self.space, self.num_classes, self.in_chans = space, num_classes, in_chans
        self.kernel_transform = bool(kernel_transform)
        self.conv_stem = DynamicConv2d(in_chans, space.stem_chs, 3, 2)
        self.bn1 = DynamicBatchNorm2d(space.stem_chs)
        stacks: list[nn.Sequential] = [nn.Sequential(SuperDSBlock(space.stem_chs, space.ds_chs))]
        in_chs = space.ds_chs
        for stage in space.stages:
            blocks = [SuperInvertedResidual(in_chs if j == 0 else stage.out_chs, stage.out_chs, space,
                                            stage.stride if j == 0 else 1, j == 0, self.kernel_transform)
                      for j in range(space.max_depth)]
            stacks.append(nn.Sequential(*blocks))
            in_chs = stage.out_chs
        self.blocks = nn.Sequential(*stacks)
        if space.head_conv_chs:
            self.conv_head: nn.Module = DynamicConv2d(in_chs, space.head_conv_chs)
            self.bn2: nn.Module = DynamicBatchNorm2d(space.head_conv_chs)
            in_chs = space.head_conv_chs
        self.classifier = DynamicLinear(in_chs, num_classes)
        self.active_arch: Arch = space.max_arch()
        self._depths: tuple[int, ...] = ()
        self.set_active(self.active_arch)

    # ------------------------------------------------------------------------------------------ config
    def set_active(self, arch: Arch) -> "Supernet":
        """Make ``arch`` (a member of the space; ``ValueError`` otherwise) the active sub-network."""
        self.space.validate(arch)
        for i, stage in enumerate(arch.stages):
            stack = self.blocks[i + 1]
            for j, block in enumerate(stage.blocks):
                sb: SuperInvertedResidual = stack[j]
                sb.active_expand = block.expand
                sb.conv_dw.active_kernel = block.kernel
                sb.conv_pwl.active_out = stage.out_chs
        self._depths = arch.depths
        self.active_arch = arch
        return self

    def no_weight_decay(self) -> set[str]:
        """Kernel transform matrices get no weight decay (timm ``create_optimizer_v2`` reads this)."""
        return {n for n, _ in self.named_parameters() if ".transforms." in n}

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - runs the active sub-network
        x = F.relu6(self.bn1(self.conv_stem(x)))
        x = self.blocks[0](x)
        for i, depth in enumerate(self._depths):
            stack = self.blocks[i + 1]
            for j in range(depth):
                x = stack[j](x)
        if self.space.head_conv_chs:
            x = F.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean((2, 3)))

    # ------------------------------------------------------------------------------------------ extraction
    def extract(self, arch: Arch | None = None, **timm_kwargs: Any) -> nn.Module:
        """Standalone timm ``EfficientNet`` of ``arch`` (default: the active one) with the shared weights copied
        (a copy: later supernet training does not change it). In eval mode iff the supernet is."""

        arch = self.active_arch if arch is None else arch
        self.space.validate(arch)
        model = build_efficientnet(arch, num_classes=self.num_classes, in_chans=self.in_chans, **timm_kwargs)
        model.to(device=self.conv_stem.weight.device, dtype=self.conv_stem.weight.dtype)
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, nn.Conv2d):
                    src = self.get_submodule(name)
                    if isinstance(src, DynamicDepthwiseConv2d):
                        w = src.weight_for(module.out_channels, module.kernel_size[0])
                    else:
                        w = src.weight_for(module.out_channels, module.in_channels)
                    if w.shape != module.weight.shape:
                        raise RuntimeError(f"extract: {name} weight {tuple(w.shape)} != {tuple(module.weight.shape)}")
                    module.weight.copy_(w)
                elif isinstance(module, nn.BatchNorm2d):
                    src = self.get_submodule(name)
                    c = module.num_features
                    for attr in ("weight", "bias", "running_mean", "running_var"):
                        getattr(module, attr).copy_(getattr(src, attr)[:c])
                    module.num_batches_tracked.copy_(src.num_batches_tracked)
                    module.momentum, module.eps = src.momentum, src.eps
                elif isinstance(module, nn.Linear):
                    module.weight.copy_(self.classifier.weight[:, : module.in_features])
                    module.bias.copy_(self.classifier.bias)
        return model.train(self.training)


# ================================================================================================ training
def evaluate_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of ``model`` (eval mode, no grad) on tensors ``x``, ``y``."""

    flag = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for xb, yb in iterate_batches(x, y, batch_size):
            correct += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
    model.train(flag)
    return 100.0 * correct / max(1, int(x.shape[0]))


def train_supernet(
    supernet: Supernet,
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 4e-5,
    momentum: float = 0.9,
    warmup_epochs: int = 0,
    num_random: int = 2,
    distill: bool = True,
    smoothing: float = 0.1,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    log_interval: int = 50,
) -> dict[str, float]:
    """Train ``supernet`` with the sandwich rule (module docstring) on in-memory tensors.

    timm's SGD (Nesterov, ``create_optimizer_v2(opt='sgd')``, no weight decay on BN/bias/kernel transforms) and
    cosine schedule with optional linear warm-up, stepped per update. Returns ``{'loss': last epoch mean loss of the
    largest member, 'seconds': ...}``. The architecture active before the call is active again afterwards."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
    if isinstance(num_random, bool) or not isinstance(num_random, int) or num_random < 0:
        raise ValueError(f"num_random={num_random!r} must be an int >= 0 (the sandwich rule uses 2)")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive number")
    if train_x.shape[0] != train_y.shape[0] or train_x.shape[0] == 0:
        raise ValueError(f"train_x ({train_x.shape[0]}) and train_y ({train_y.shape[0]}) must be equal, non-empty")
    space = supernet.space
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    device = supernet.conv_stem.weight.device
    optimizer = create_optimizer_v2(supernet, opt="sgd", lr=lr, weight_decay=weight_decay, momentum=momentum)
    steps_per_epoch = math.ceil(train_x.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=0.0, warmup_t=warmup_epochs * steps_per_epoch,
                                  warmup_lr_init=lr * 0.01, t_in_epochs=False)
    previous = supernet.active_arch
    largest, smallest = space.max_arch(), space.min_arch()
    start, step, epoch_loss = time.time(), 0, float("nan")
    supernet.train()
    try:
        for epoch in range(epochs):
            running, count = 0.0, 0
            for xb, yb in iterate_batches(train_x, train_y, batch_size, shuffle=True, generator=gen):
                xb, yb = xb.to(device), yb.to(device)
                optimizer.zero_grad(set_to_none=True)
                supernet.set_active(largest)
                logits = supernet(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite supernet loss at step {step}; lower lr={lr}")
                loss.backward()
                soft = F.softmax(logits.detach(), dim=1) if distill else None
                for arch in [smallest] + [space.random_arch(rng) for _ in range(num_random)]:
                    supernet.set_active(arch)
                    out = supernet(xb)
                    sub = (F.cross_entropy(out, soft) if soft is not None
                           else F.cross_entropy(out, yb, label_smoothing=smoothing))
                    sub.backward()
                optimizer.step()
                step += 1
                scheduler.step_update(step)
                running += float(loss.detach())
                count += 1
                if log is not None and log_interval and step % log_interval == 0:
                    log(f"supernet epoch {epoch + 1}/{epochs} step {step}/{total} loss(largest) {running / count:.4f} "
                        f"lr {optimizer.param_groups[0]['lr']:.4g} {time.time() - start:.0f}s")
            epoch_loss = running / max(1, count)
            if log is not None:
                log(f"supernet epoch {epoch + 1}/{epochs} done: loss(largest) {epoch_loss:.4f} "
                    f"({time.time() - start:.0f}s)")
    finally:
        supernet.set_active(previous)
    return {"loss": epoch_loss, "seconds": time.time() - start, "steps": float(step)}


# ================================================================================================ checkpoints
def save_supernet(supernet: Supernet, path: str, **meta: Any) -> None:
    """Atomic checkpoint loadable with ``torch.load(weights_only=True)`` (tensors + plain Python types only)."""
    payload = {"state_dict": supernet.state_dict(), "space": supernet.space.to_dict(),
               "num_classes": supernet.num_classes, "in_chans": supernet.in_chans,
               "kernel_transform": supernet.kernel_transform, "meta": dict(meta)}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_supernet(path: str, map_location: str | torch.device = "cpu") -> tuple[Supernet, dict[str, Any]]:
    """``(supernet, meta)`` from :func:`save_supernet`'s file."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"supernet checkpoint {path!r} does not exist; train one with "
                         "python -m shiftaddaug_plugin.nas.cli train-supernet --out <path>")
    payload: Mapping[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    supernet = Supernet(SearchSpace.from_dict(payload["space"]), int(payload["num_classes"]),
                        int(payload["in_chans"]), bool(payload["kernel_transform"]))
    supernet.load_state_dict(payload["state_dict"])
    return supernet, dict(payload.get("meta", {}))
