"""Search space and architecture encoding of the two-stage NAS (ShiftAddAug §3.4, docs/algorithms.md §7).

An :class:`Arch` is a MobileNet-style network: stem conv3x3 s2 -> depthwise-separable block -> stages of inverted
residual blocks (per block: depthwise kernel, expand ratio, target operator) -> optional 1x1 head conv -> GAP -> FC.
It converts to timm block strings (:meth:`Arch.block_strings`), so every architecture is an ordinary timm
``EfficientNet`` (``shiftaddaug_plugin.nas.custom_model``: ``timm.create_model('shiftadd_custom', arch=...)``), and
to/from JSON (:meth:`Arch.to_dict` / :meth:`Arch.from_json`).

A :class:`SearchSpace` is the OFA / TinyNAS-style elastic space of the supernet (docs/algorithms.md §7 stage 1): per
stage a depth (first ``d`` blocks) and a width (output channels), per block a kernel in ``kernel_choices`` (centre crops
of
the largest kernel) and an expand ratio (leading mid channels), and optionally NASA's per-block operator choice
(``op_choices``, e.g. ``('mult', 'shift', 'adder')``). Its Optuna encoding uses one categorical parameter per
decision (``s{i}_d``, ``s{i}_w``, ``s{i}_b{j}_k``, ``s{i}_b{j}_e``, ``s{i}_b{j}_op``); blocks beyond the chosen
depth keep their parameters (fixed-length genome, as OFA's) and are ignored by :meth:`SearchSpace.decode`.

This module is light (dataclasses + json): no torch, timm or optuna import.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_write_text
from ..ops import op_spec

__all__ = [
    "BlockArch",
    "StageArch",
    "Arch",
    "StageSpace",
    "SearchSpace",
    "SPACE_PRESETS",
    "make_divisible",
    "load_arch",
]

_ARCH_VERSION = 1


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10 % below ``value`` (MobileNet rule,
    identical to timm's ``make_divisible`` and ``shiftaddaug_plugin.convert.make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _fmt_ratio(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_op(op: Any, where: str) -> str:
    return op_spec(op, where=where).op.value


def _check_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}={value!r} must be an int >= {minimum}")
    return value


# ============================================================================================ architectures
@dataclass(frozen=True)
class BlockArch:
    """One inverted-residual block: depthwise ``kernel`` (odd), ``expand`` ratio, target operator ``op``."""

    kernel: int
    expand: float
    op: str = "mult"

    def __post_init__(self) -> None:
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"BlockArch.kernel={self.kernel!r} must be an odd positive int (3, 5, 7)")
        if isinstance(self.expand, bool) or not isinstance(self.expand, (int, float)) or not self.expand > 0:
            raise ValueError(f"BlockArch.expand={self.expand!r} must be a number > 0 (e.g. 3, 4, 6)")
        object.__setattr__(self, "expand", float(self.expand))
        _check_op(self.op, "BlockArch")


@dataclass(frozen=True)
class StageArch:
    """A stage: ``blocks`` (depth = ``len(blocks)``) with ``out_chs`` outputs; the first block has ``stride`` and no
    residual, the others stride 1 with a residual (docs/algorithms.md §9)."""

    out_chs: int
    stride: int
    blocks: tuple[BlockArch, ...]

    def __post_init__(self) -> None:
        _check_int(self.out_chs, "StageArch.out_chs")
        if self.stride not in (1, 2):
            raise ValueError(f"StageArch.stride={self.stride!r} must be 1 or 2")
        blocks = tuple(self.blocks)
        if not blocks or not all(isinstance(b, BlockArch) for b in blocks):
            raise ValueError("StageArch.blocks must be a non-empty sequence of BlockArch")
        object.__setattr__(self, "blocks", blocks)

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Arch:
    """A searchable network (module docstring). ``base_op`` is the target operator of the layers outside the
    searched blocks (depthwise-separable block, head conv, classifier); the stem conv stays multiplicative, as
    ``ConvertConfig(keep_first_conv_mult=True)`` keeps it."""

    stages: tuple[StageArch, ...]
    stem_chs: int = 16
    ds_chs: int = 8
    head_conv_chs: int = 0  #: 1x1 conv before pooling; 0 = none (the last stage feeds the classifier, MCUNet)
    base_op: str = "mult"

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        if not stages or not all(isinstance(s, StageArch) for s in stages):
            raise ValueError("Arch.stages must be a non-empty sequence of StageArch")
        object.__setattr__(self, "stages", stages)
        _check_int(self.stem_chs, "Arch.stem_chs")
        _check_int(self.ds_chs, "Arch.ds_chs")
        _check_int(self.head_conv_chs, "Arch.head_conv_chs", minimum=0)
        _check_op(self.base_op, "Arch.base_op")

    # ------------------------------------------------------------------------------------------ views
    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.out_chs for s in self.stages)

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.head_conv_chs or self.stages[-1].out_chs

    def block_strings(self) -> list[list[str]]:
        """timm block strings: one stack for the DS block, one per stage (``decode_arch_def`` input)."""
        stacks: list[list[str]] = [[f"ds_r1_k3_s1_c{self.ds_chs}_noskip"]]
        for stage in self.stages:
            blocks = []
            for j, block in enumerate(stage.blocks):
                stride = stage.stride if j == 0 else 1
                text = f"ir_r1_k{block.kernel}_s{stride}_e{_fmt_ratio(block.expand)}_c{stage.out_chs}"
                blocks.append(text + "_noskip" if j == 0 else text)
            stacks.append(blocks)
        return stacks

    def block_module_name(self, stage: int, block: int) -> str:
        """Module name of a block in the timm model (``blocks.<stack>.<index>``; stack 0 is the DS block)."""
        return f"blocks.{stage + 1}.{block}"

    def op_overrides(self, default_op: str | None = None) -> dict[str, str]:
        """``ConvertConfig.op_overrides`` (regex -> op) for the blocks whose op differs from ``default_op``
        (default ``base_op``)."""
        default = self.base_op if default_op is None else _check_op(default_op, "op_overrides")
        out: dict[str, str] = {}
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                if block.op != default:
                    out[self.block_module_name(i, j).replace(".", r"\.") + r"\..+"] = block.op
        return out

    def ops(self) -> tuple[str, ...]:
        """Target operator of every searched block, shallow to deep."""
        return tuple(b.op for s in self.stages for b in s.blocks)

    def with_ops(self, op: str) -> "Arch":
        """Copy with every block (and ``base_op``) set to ``op``."""
        _check_op(op, "Arch.with_ops")
        stages = tuple(StageArch(s.out_chs, s.stride, tuple(BlockArch(b.kernel, b.expand, op) for b in s.blocks))
                       for s in self.stages)
        return Arch(stages, self.stem_chs, self.ds_chs, self.head_conv_chs, op)

    def describe(self) -> str:
        """One line: ``d=[..] w=[..] k=[[..]] e=[[..]]`` (+ ops when mixed)."""
        ks = [[b.kernel for b in s.blocks] for s in self.stages]
        es = [[_fmt_ratio(b.expand) for b in s.blocks] for s in self.stages]
        text = f"d={list(self.depths)} w={list(self.widths)} k={ks} e={es}".replace("'", "")
        ops = set(self.ops()) | {self.base_op}
        if len(ops) > 1 or self.base_op != "mult":
            text += f" ops={[[b.op for b in s.blocks] for s in self.stages]} base_op={self.base_op}".replace("'", "")
        return text

    # ------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (also holds the timm block strings for reference)."""
        return {
            "version": _ARCH_VERSION,
            "stem_chs": self.stem_chs,
            "ds_chs": self.ds_chs,
            "head_conv_chs": self.head_conv_chs,
            "base_op": self.base_op,
            "stages": [
                {"out_chs": s.out_chs, "stride": s.stride,
                 "blocks": [{"kernel": b.kernel, "expand": b.expand, "op": b.op} for b in s.blocks]}
                for s in self.stages
            ],
            "block_strings": self.block_strings(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Arch":
        """Inverse of :meth:`to_dict` (``block_strings`` and unknown top-level metadata keys are ignored)."""
        if not isinstance(data, Mapping) or "stages" not in data:
            raise ValueError("an architecture dict needs 'stages' (a list of {out_chs, stride, blocks}); write it with "
                             "Arch.to_dict() or the NAS CLI")
        try:
            stages = tuple(
                StageArch(int(s["out_chs"]), int(s["stride"]),
                          tuple(BlockArch(int(b["kernel"]), float(b["expand"]), str(b.get("op", "mult")))
                                for b in s["blocks"]))
                for s in data["stages"]
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed architecture dict ({err!r}); every stage needs out_chs, stride and blocks "
                             "of {kernel, expand, op}") from None
        return cls(stages, int(data.get("stem_chs", 16)), int(data.get("ds_chs", 8)),
                   int(data.get("head_conv_chs", 0)), str(data.get("base_op", "mult")))

    def to_json(self, path: str | os.PathLike[str] | None = None, **extra: Any) -> str:
        """JSON text (written to ``path`` when given); ``extra`` keys (e.g. search metadata) are added."""
        text = json.dumps({**self.to_dict(), **extra}, indent=2)
        if path is not None:
            atomic_write_text(text + "\n", path)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> "Arch":
        """From a JSON file path or a JSON string."""
        return cls.from_dict(_read_json(source))


def _read_json(source: str | os.PathLike[str]) -> Any:
    text = str(source)
    if text.lstrip().startswith("{"):
        return json.loads(text)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"architecture file {text!r} does not exist; pass a JSON file written by the NAS CLI "
                         "(arch.json) or a JSON string")
    return json.loads(path.read_text())


def load_arch(arch: "Arch | Mapping[str, Any] | str | os.PathLike[str]") -> Arch:
    """An :class:`Arch` from an ``Arch``, a dict, a JSON string or a JSON file path."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, Mapping):
        return Arch.from_dict(arch)
    if isinstance(arch, (str, os.PathLike)):
        return Arch.from_json(arch)
    raise TypeError(f"arch must be an Arch, a dict, a JSON string or a path, got {type(arch).__name__}")


# ============================================================================================ search space
@dataclass(frozen=True)
class StageSpace:
    """Largest version of a stage: ``out_chs`` (widths are fractions of it) and the first-block ``stride``."""

    out_chs: int
    stride: int

    def __post_init__(self) -> None:
        _check_int(self.out_chs, "StageSpace.out_chs")
        if self.stride not in (1, 2):
            raise ValueError(f"StageSpace.stride={self.stride!r} must be 1 or 2")


def _choices(name: str, values: Any, kind: type) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"SearchSpace.{name} must be a non-empty list, got {values!r}")
    out = []
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"SearchSpace.{name} must hold ints, got {v!r}")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"SearchSpace.{name} must hold numbers, got {v!r}")
        out.append(kind(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class SearchSpace:
    """Elastic MobileNet space of the supernet (module docstring). Defaults: OFA's kernel {3,5,7}, expand
    {3,4,6}, depth {2,3,4}; widths 0.75x / 1x of each stage's ``out_chs``; multiplicative ops only."""

    stages: tuple[StageSpace, ...]
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[float, ...] = (3.0, 4.0, 6.0)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    width_choices: tuple[float, ...] = (0.75, 1.0)
    op_choices: tuple[str, ...] = ("mult",)
    base_op: str = "mult"
    stem_chs: int = 16
    ds_chs: int = 8
    head_conv_chs: int = 0
    divisor: int = 8

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, StageSpace) else StageSpace(**s) for s in self.stages)
        if not stages:
            raise ValueError("SearchSpace.stages must not be empty")
        object.__setattr__(self, "stages", stages)
        kernels = _choices("kernel_choices", self.kernel_choices, int)
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"SearchSpace.kernel_choices={kernels} must be odd positive ints (e.g. 3, 5, 7)")
        object.__setattr__(self, "kernel_choices", kernels)
        expands = _choices("expand_choices", self.expand_choices, float)
        if any(e <= 0 for e in expands):
            raise ValueError(f"SearchSpace.expand_choices={expands} must be > 0")
        object.__setattr__(self, "expand_choices", expands)
        depths = _choices("depth_choices", self.depth_choices, int)
        if depths[0] < 1:
            raise ValueError(f"SearchSpace.depth_choices={depths} must be >= 1")
        object.__setattr__(self, "depth_choices", depths)
        widths = _choices("width_choices", self.width_choices, float)
        if any(not 0 < w <= 1.0 for w in widths):
            raise ValueError(f"SearchSpace.width_choices={widths} must lie in (0, 1] (fractions of StageSpace.out_chs)")
        object.__setattr__(self, "width_choices", widths)
        ops = tuple(dict.fromkeys(_check_op(op, "SearchSpace.op_choices") for op in self.op_choices))
        if not ops:
            raise ValueError("SearchSpace.op_choices must not be empty; use ('mult',) for a multiplicative space")
        object.__setattr__(self, "op_choices", ops)
        _check_op(self.base_op, "SearchSpace.base_op")
        for name in ("stem_chs", "ds_chs", "divisor"):
            _check_int(getattr(self, name), f"SearchSpace.{name}")
        _check_int(self.head_conv_chs, "SearchSpace.head_conv_chs", minimum=0)

    # ------------------------------------------------------------------------------------------ sizes
    @property
    def max_depth(self) -> int:
        return self.depth_choices[-1]

    @property
    def max_kernel(self) -> int:
        return self.kernel_choices[-1]

    def stage_width_choices(self, stage: int) -> tuple[int, ...]:
        """Distinct output widths (channels) of ``stage``, ascending."""
        out = self.stages[stage].out_chs
        return tuple(sorted({min(out, make_divisible(out * w, self.divisor)) if w < 1 else out
                             for w in self.width_choices}))

    # ------------------------------------------------------------------------------------------ members
    def _arch(self, depths: Sequence[int], widths: Sequence[int], blocks: Sequence[Sequence[BlockArch]]) -> Arch:
        stages = tuple(StageArch(int(w), s.stride, tuple(blocks[i][: depths[i]]))
                       for i, (s, w) in enumerate(zip(self.stages, widths)))
        return Arch(stages, self.stem_chs, self.ds_chs, self.head_conv_chs, self.base_op)

    def max_arch(self, op: str | None = None) -> Arch:
        """Largest member (deepest, widest, largest kernel and expand); ops = ``op`` or the first op choice."""
        b = BlockArch(self.max_kernel, self.expand_choices[-1], op or self.op_choices[0])
        return self._arch([self.max_depth] * len(self.stages),
                          [self.stage_width_choices(i)[-1] for i in range(len(self.stages))],
                          [[b] * self.max_depth for _ in self.stages])

    def min_arch(self, op: str | None = None) -> Arch:
        """Smallest member."""
        b = BlockArch(self.kernel_choices[0], self.expand_choices[0], op or self.op_choices[0])
        return self._arch([self.depth_choices[0]] * len(self.stages),
                          [self.stage_width_choices(i)[0] for i in range(len(self.stages))],
                          [[b] * self.max_depth for _ in self.stages])

    def random_arch(self, rng: random.Random) -> Arch:
        """A uniformly random member (each decision independently uniform)."""
        return self.decode({k: rng.choice(v) for k, v in self.param_choices().items()})

    def validate(self, arch: Arch) -> Arch:
        """``ValueError`` naming the first decision of ``arch`` outside this space; returns ``arch``."""
        if len(arch.stages) != len(self.stages):
            raise ValueError(f"arch has {len(arch.stages)} stages, the search space {len(self.stages)}")
        for name in ("stem_chs", "ds_chs", "head_conv_chs"):
            if getattr(arch, name) != getattr(self, name):
                raise ValueError(f"arch.{name}={getattr(arch, name)} differs from the search space's "
                                 f"{getattr(self, name)}")
        for i, (stage, space) in enumerate(zip(arch.stages, self.stages)):
            if stage.stride != space.stride:
                raise ValueError(f"stage {i}: stride {stage.stride} differs from the space's {space.stride}")
            if stage.out_chs not in self.stage_width_choices(i):
                raise ValueError(f"stage {i}: width {stage.out_chs} not in {self.stage_width_choices(i)}")
            if stage.depth not in self.depth_choices:
                raise ValueError(f"stage {i}: depth {stage.depth} not in {self.depth_choices}")
            for j, b in enumerate(stage.blocks):
                if b.kernel not in self.kernel_choices:
                    raise ValueError(f"stage {i} block {j}: kernel {b.kernel} not in {self.kernel_choices}")
                if b.expand not in self.expand_choices:
                    raise ValueError(f"stage {i} block {j}: expand {b.expand} not in {self.expand_choices}")
                if b.op not in self.op_choices:
                    raise ValueError(f"stage {i} block {j}: op {b.op!r} not in {self.op_choices}")
        return arch

    # ------------------------------------------------------------------------------------------ genome
    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        """Optuna parameter name -> choices (fixed-length genome; module docstring)."""
        out: dict[str, tuple[Any, ...]] = {}
        for i in range(len(self.stages)):
            if len(self.depth_choices) > 1:
                out[f"s{i}_d"] = self.depth_choices
            if len(self.stage_width_choices(i)) > 1:
                out[f"s{i}_w"] = self.stage_width_choices(i)
            for j in range(self.max_depth):
                if len(self.kernel_choices) > 1:
                    out[f"s{i}_b{j}_k"] = self.kernel_choices
                if len(self.expand_choices) > 1:
                    out[f"s{i}_b{j}_e"] = self.expand_choices
                if len(self.op_choices) > 1:
                    out[f"s{i}_b{j}_op"] = self.op_choices
        return out

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """Parameters (as from :meth:`param_choices`) -> :class:`Arch`; missing single-choice decisions default."""
        depths, widths, blocks = [], [], []
        for i in range(len(self.stages)):
            depths.append(int(params.get(f"s{i}_d", self.depth_choices[0])))
            widths.append(int(params.get(f"s{i}_w", self.stage_width_choices(i)[0])))
            blocks.append([BlockArch(int(params.get(f"s{i}_b{j}_k", self.kernel_choices[0])),
                                     float(params.get(f"s{i}_b{j}_e", self.expand_choices[0])),
                                     str(params.get(f"s{i}_b{j}_op", self.op_choices[0])))
                           for j in range(self.max_depth)])
        return self.validate(self._arch(depths, widths, blocks))

    def encode(self, arch: Arch) -> dict[str, Any]:
        """:class:`Arch` -> parameters (blocks beyond a stage's depth repeat its last block), e.g. for
        ``study.enqueue_trial``. ``decode(encode(a)) == a``."""
        self.validate(arch)
        choices = self.param_choices()
        out: dict[str, Any] = {}
        for i, stage in enumerate(arch.stages):
            values: dict[str, Any] = {f"s{i}_d": stage.depth, f"s{i}_w": stage.out_chs}
            for j in range(self.max_depth):
                b = stage.blocks[min(j, stage.depth - 1)]
                values.update({f"s{i}_b{j}_k": b.kernel, f"s{i}_b{j}_e": b.expand, f"s{i}_b{j}_op": b.op})
            out.update({k: v for k, v in values.items() if k in choices})
        return out

    def suggest(self, trial: Any) -> Arch:
        """Draw an architecture through an Optuna ``trial`` (categorical parameters)."""
        return self.decode({name: trial.suggest_categorical(name, list(vals))
                            for name, vals in self.param_choices().items()})

    def size(self) -> int:
        """Number of distinct architectures."""
        total = 1
        per_block = len(self.kernel_choices) * len(self.expand_choices) * len(self.op_choices)
        for i in range(len(self.stages)):
            total *= len(self.stage_width_choices(i)) * sum(per_block ** d for d in self.depth_choices)
        return total

    # ------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [{"out_chs": s.out_chs, "stride": s.stride} for s in self.stages],
            "kernel_choices": list(self.kernel_choices), "expand_choices": list(self.expand_choices),
            "depth_choices": list(self.depth_choices), "width_choices": list(self.width_choices),
            "op_choices": list(self.op_choices), "base_op": self.base_op, "stem_chs": self.stem_chs,
            "ds_chs": self.ds_chs, "head_conv_chs": self.head_conv_chs, "divisor": self.divisor,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown search-space keys {unknown}; allowed: {sorted(known)}")
        kwargs = dict(data)
        kwargs["stages"] = tuple(StageSpace(int(s["out_chs"]), int(s["stride"])) for s in data["stages"])
        for key in ("kernel_choices", "expand_choices", "depth_choices", "width_choices", "op_choices"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def with_ops(self, op_choices: Sequence[str], base_op: str | None = None) -> "SearchSpace":
        """Copy with NASA's per-block operator choice (``op_choices``) and ``base_op``."""
        data = self.to_dict()
        data["op_choices"] = tuple(op_choices)
        data["base_op"] = base_op if base_op is not None else self.base_op
        return SearchSpace.from_dict(data)


#: named spaces: 'mcunet' (MCUNet-like stages for 32-176 px inputs), 'tiny' (tests, 16 px smoke runs)
SPACE_PRESETS: dict[str, SearchSpace] = {
    "mcunet": SearchSpace(
        stages=(StageSpace(16, 2), StageSpace(24, 2), StageSpace(40, 2), StageSpace(48, 1), StageSpace(96, 2)),
    ),
    "tiny": SearchSpace(
        stages=(StageSpace(16, 2), StageSpace(24, 2), StageSpace(32, 1)),
        kernel_choices=(3, 5, 7), expand_choices=(2.0, 3.0), depth_choices=(1, 2), width_choices=(0.5, 1.0),
        stem_chs=8, ds_chs=8,
    ),
}
