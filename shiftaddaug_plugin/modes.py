"""Execution modes of hybrid networks (ShiftAddAug §3.1, NetAug).

A hybrid layer runs either the *target* network alone (leading channels, multiplication-free operators) or the
*augmented* network (target channels plus extra multiplicative channels, eq. 4). ``set_mode`` switches every
hybrid layer of a model; it is a plain call and also a context manager that restores the previous modes::

    set_mode(model, Mode.TARGET)              # stays in target mode
    with set_mode(model, Mode.AUGMENTED):     # augmented inside, previous modes restored after
        loss_aug = criterion(model(x), y)
"""
from __future__ import annotations

import enum
from types import TracebackType
from typing import Any, Iterator, TypeVar

from torch import nn

E = TypeVar("E", bound="ChoiceEnum")


class ChoiceEnum(str, enum.Enum):
    """A string enum whose :meth:`parse` accepts a member or its (case-insensitive) value."""

    @classmethod
    def parse(cls: type[E], value: "E | str") -> E:
        """Accept a member or its string value; raise a ``ValueError`` listing the valid values otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"unknown {cls._label()} {value!r}; use one of {valid} (or "
                             f"shiftaddaug_plugin.{cls.__name__})") from None

    def __str__(self) -> str:  # the value, also in f-strings, on every Python version
        return str(self.value)

    @classmethod
    def _label(cls) -> str:
        return cls.__name__.lower()


class Mode(ChoiceEnum):
    """Which sub-network a hybrid layer computes."""

    TARGET = "target"  #: target (multiplication-free) channels only: the network that gets exported
    AUGMENTED = "augmented"  #: target + multiplicative augmented channels at the active widths


def is_hybrid(module: nn.Module) -> bool:
    """``True`` for a hybrid layer: its ``mode`` is a :class:`Mode` (the one test the package uses)."""
    return isinstance(getattr(module, "mode", None), Mode)


def _modal_modules(model: nn.Module) -> Iterator[Any]:  # hybrid layers: duck-typed ``mode``
    """Every hybrid layer of ``model`` in module order."""
    for module in model.modules():
        if is_hybrid(module):
            yield module


class set_mode:  # noqa: N801 - used like a function
    """Set ``mode`` on every hybrid layer of ``model``; as a context manager, restore the old modes on exit."""

    def __init__(self, model: nn.Module, mode: "Mode | str") -> None:
        new_mode = Mode.parse(mode)
        self._previous = [(m, m.mode) for m in _modal_modules(model)]
        for module, _ in self._previous:
            module.mode = new_mode

    def __enter__(self) -> "set_mode":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for module, old in self._previous:
            module.mode = old


def get_mode(model: nn.Module) -> Mode | None:
    """The common mode of all hybrid layers, ``None`` if the model has none; ``ValueError`` if they disagree."""
    modes = {m.mode for m in _modal_modules(model)}
    if len(modes) > 1:
        raise ValueError(f"hybrid layers are in mixed modes {sorted(m.value for m in modes)}; call set_mode(model, "
                         f"...)")
    return modes.pop() if modes else None
