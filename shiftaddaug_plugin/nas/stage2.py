"""Stage 2 of the two-stage NAS: target layers of a depth-augmented network (ShiftAddAug §3.4, docs/algorithms.md §7).

A *deep* subnet cut from the supernet is the depth-augmented network. A :class:`TargetSelection` says which of its
blocks form the target network; only residual blocks (not the first block of a stage, which changes the shape)
can be left out. The unselected blocks are **depth augmentation**: they run in the augmented pass of training and
are removed from the exported target.

* :meth:`TargetSelection.target_arch` / :func:`drop_unselected`: the target architecture / model (blocks removed and
  re-indexed, so the result is exactly ``timm.create_model('shiftadd_custom', arch=target_arch)``).
* :func:`wrap_depth_augmentation`: wrap the unselected blocks of a timm model in :class:`DepthAugBlock`, which
  carries a ``mode`` (:class:`~shiftaddaug_plugin.modes.Mode`) like the hybrid layers: identity in ``Mode.TARGET``,
  the block in ``Mode.AUGMENTED``. ``set_mode`` switches it together with the hybrid layers, so the timm entry
  point's joint step (target pass in ``Mode.TARGET``, augmented pass in ``Mode.AUGMENTED``), BN recalibration
  (``Mode.TARGET``) and ``count_ops(mode=...)`` need no change. Wrap **before** ``convert`` (a new
  ``DepthAugBlock`` starts in ``Mode.AUGMENTED``, so the converter's traced pass reaches the wrapped blocks).
* :func:`depth_aug_loss`: the joint loss ``L(target) + alpha * L(deep)`` for training loops of one's own.
* :func:`export_target`: the slim target. ``convert.export`` does it all: ``DepthAugBlock.export()`` returns
  ``None``, which its export protocol reads as "remove this block" (the trainers need no NAS-specific export).
* :func:`select_target_greedy`: a baseline selection meeting a hardware constraint (drop the residual block with the
  largest cost saving until feasible); the evolutionary search (:mod:`.search`, ``mode='select'``) is the real one.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from ..convert.export import export, is_exportable
from ..modes import Mode, set_mode
from .space import Arch, StageArch, _read_json, load_arch

__all__ = [
    "TargetSelection",
    "DepthAugBlock",
    "wrap_depth_augmentation",
    "drop_unselected",
    "export_target",
    "depth_aug_loss",
    "select_target_greedy",
    "save_depth_aug",
    "load_depth_aug",
]


@dataclass(frozen=True)
class TargetSelection:
    """Per stage of the deep arch, per block: ``True`` = the block belongs to the target network."""

    keep: tuple[tuple[bool, ...], ...]

    def __post_init__(self) -> None:
        keep = tuple(tuple(bool(k) for k in stage) for stage in self.keep)
        object.__setattr__(self, "keep", keep)
        for i, stage in enumerate(keep):
            if not stage:
                raise ValueError(f"TargetSelection: stage {i} has no block")
            if not stage[0]:
                raise ValueError(f"TargetSelection: the first block of stage {i} changes the shape (stride / width) "
                                 "and cannot be dropped; only residual blocks (index >= 1) are selectable")

    @classmethod
    def all_kept(cls, deep: Arch) -> "TargetSelection":
        return cls(tuple((True,) * s.depth for s in deep.stages))

    @staticmethod
    def removable(deep: Arch) -> list[tuple[int, int]]:
        """``(stage, block)`` of the blocks that may be dropped (residual blocks)."""
        return [(i, j) for i, s in enumerate(deep.stages) for j in range(1, s.depth)]

    def check(self, deep: Arch) -> "TargetSelection":
        """``ValueError`` if the selection does not fit ``deep``'s depths; returns ``self``."""
        if tuple(len(s) for s in self.keep) != deep.depths:
            raise ValueError(f"selection shape {[len(s) for s in self.keep]} does not match the deep arch depths "
                             f"{list(deep.depths)}")
        return self

    def unselected(self) -> list[tuple[int, int]]:
        return [(i, j) for i, s in enumerate(self.keep) for j, k in enumerate(s) if not k]

    def target_arch(self, deep: Arch) -> Arch:
        """``deep`` without the unselected blocks."""
        self.check(deep)
        stages = tuple(StageArch(s.out_chs, s.stride, tuple(b for b, k in zip(s.blocks, keep) if k))
                       for s, keep in zip(deep.stages, self.keep))
        return Arch(stages, deep.stem_chs, deep.ds_chs, deep.head_conv_chs, deep.base_op)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": [list(s) for s in self.keep]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TargetSelection":
        if not isinstance(data, Mapping) or "keep" not in data:
            raise ValueError("a selection dict needs 'keep': per stage a list of booleans")
        return cls(tuple(tuple(s) for s in data["keep"]))


def save_depth_aug(path: str | os.PathLike[str], deep: Arch, selection: TargetSelection, **extra: Any) -> str:
    """Write the deep arch with its selection (JSON key ``depth_aug``) for ``shiftadd_custom(arch=path)``."""
    selection.check(deep)
    return deep.to_json(path, depth_aug=selection.to_dict(),
                        target_block_strings=selection.target_arch(deep).block_strings(), **extra)


def load_depth_aug(source: Any) -> tuple[Arch, TargetSelection | None]:
    """``(arch, selection or None)`` from an Arch / dict / JSON string / JSON file (``depth_aug`` key optional)."""
    if isinstance(source, Arch):
        return source, None
    data = source if isinstance(source, Mapping) else _read_json(source) if isinstance(source, (str, os.PathLike)) \
        else None
    if data is None:
        raise TypeError(f"arch must be an Arch, a dict, a JSON string or a path, got {type(source).__name__}")
    arch = load_arch(data)
    selection = TargetSelection.from_dict(data["depth_aug"]).check(arch) if data.get("depth_aug") else None
    return arch, selection


class DepthAugBlock(nn.Module):
    """A depth-augmentation block: runs ``block`` in ``Mode.AUGMENTED``, is the identity in ``Mode.TARGET``.

    The wrapped block must keep the shape (a residual block). ``mode`` is switched by
    :func:`shiftaddaug_plugin.modes.set_mode` like the hybrid layers' mode."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.mode = Mode.AUGMENTED

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        if self.mode is Mode.TARGET:
            return x
        y = self.block(x)
        if y.shape != x.shape:
            raise ValueError(f"DepthAugBlock wraps a block that changes the shape {tuple(x.shape)} -> "
                             f"{tuple(y.shape)}; only residual (shape-keeping) blocks can be depth augmentation")
        return y

    def export(self) -> None:
        """Export protocol of :func:`shiftaddaug_plugin.convert.export`: ``None`` = not part of the target, remove
        this block from its ``nn.Sequential``."""
        return None

    def extra_repr(self) -> str:
        return f"mode={self.mode.value}"


def _stacks(model: nn.Module, arch: Arch) -> list[nn.Sequential]:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) != len(arch.stages) + 1:
        raise ValueError(f"{type(model).__name__} does not look like the timm EfficientNet of this arch (expected "
                         f"'blocks' with {len(arch.stages) + 1} stacks: DS block + one per stage)")
    for i, stage in enumerate(arch.stages):
        if len(blocks[i + 1]) != stage.depth:
            raise ValueError(f"stage {i}: the model has {len(blocks[i + 1])} blocks, the arch {stage.depth}")
    return [blocks[i + 1] for i in range(len(arch.stages))]


def wrap_depth_augmentation(model: nn.Module, deep: Arch, selection: TargetSelection) -> nn.Module:
    """Wrap the unselected blocks of the timm model of ``deep`` in :class:`DepthAugBlock` (in place; returns it)."""
    selection.check(deep)
    stacks = _stacks(model, deep)
    for i, j in selection.unselected():
        if not isinstance(stacks[i][j], DepthAugBlock):
            stacks[i][j] = DepthAugBlock(stacks[i][j])
    return model


def _strip(stack: nn.Sequential, keep: Sequence[bool]) -> nn.Sequential:
    kept = [m for m, k in zip(stack, keep) if k and not isinstance(m, DepthAugBlock)]
    return nn.Sequential(*kept)


def drop_unselected(model: nn.Module, deep: Arch, selection: TargetSelection) -> nn.Module:
    """A copy of the timm model of ``deep`` without the unselected blocks (re-indexed: its ``state_dict`` keys
    are those of ``shiftadd_custom(arch=selection.target_arch(deep))``). ``model`` is not modified."""
    selection.check(deep)
    out = copy.deepcopy(model)
    stacks = _stacks(out, deep)
    for i, (stack, keep) in enumerate(zip(stacks, selection.keep)):
        out.blocks[i + 1] = _strip(stack, keep)
    return out


def export_target(model: nn.Module) -> nn.Module:
    """The slim target of a (converted) depth-augmented model: :func:`shiftaddaug_plugin.convert.export`, whose
    export protocol exports the hybrid layers and removes every :class:`DepthAugBlock` from its ``nn.Sequential``
    (indices re-numbered); a model with neither is copied. ``model`` is not modified."""

    if not any(is_exportable(m) for m in model.modules()):
        return copy.deepcopy(model)
    return export(model)


def depth_aug_loss(model: nn.Module, images: Tensor, targets: Tensor, criterion: Callable[[Tensor, Tensor], Tensor],
                   alpha: float = 1.0) -> dict[str, Tensor]:
    """Joint loss of target and depth-augmented network (ShiftAddAug §3.4): target pass in ``Mode.TARGET``
    (unselected blocks skipped) + ``alpha`` x deep pass in ``Mode.AUGMENTED``; one backward on ``loss``.

    Returns ``{'loss', 'loss_target', 'loss_aug', 'output'}`` (``output``: target logits). The model's previous
    modes are restored."""
    with set_mode(model, Mode.TARGET):
        output = model(images)
        loss_t = criterion(output, targets)
    with set_mode(model, Mode.AUGMENTED):
        loss_a = criterion(model(images), targets)
    return {"loss": loss_t + alpha * loss_a, "loss_target": loss_t, "loss_aug": loss_a, "output": output}


def select_target_greedy(deep: Arch, feasible: Callable[[Arch], float]) -> TargetSelection:
    """Drop residual blocks of ``deep`` until the target meets the hardware constraint.

    ``feasible(arch) -> violation`` (``<= 0``: constraint met; e.g. ``Constraints.violation`` of the arch's cost).
    Each round drops the removable block whose removal lowers the violation most (ties: the deeper block). Raises
    ``ValueError`` if even the shallowest target violates the constraint."""
    keep = [list(k) for k in TargetSelection.all_kept(deep).keep]
    current = feasible(deep)
    while current > 0:
        best: tuple[float, int, int] | None = None
        for i, stage in enumerate(keep):
            for j in range(len(stage) - 1, 0, -1):
                if not stage[j]:
                    continue
                stage[j] = False
                value = feasible(TargetSelection(tuple(map(tuple, keep))).target_arch(deep))
                stage[j] = True
                if best is None or value < best[0] or (value == best[0] and (i, j) > best[1:]):
                    best = (value, i, j)
        if best is None:
            raise ValueError(f"no target of the deep arch meets the constraint (violation {current:.3g} with every "
                             "residual block dropped); choose a smaller deep subnet or relax the constraint")
        keep[best[1]][best[2]] = False
        current = best[0]
    return TargetSelection(tuple(map(tuple, keep)))
