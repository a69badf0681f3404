"""Make mmengine checkpoints loadable with ``torch.load(weights_only=True)`` (docs/ARCHITECTURE.md: torch >= 2.6 loads
with ``weights_only=True`` by default, and mmengine 0.10's ``--resume`` calls ``torch.load`` without the argument).

mmengine stores its ``MessageHub`` state (``HistoryBuffer`` objects holding numpy arrays, numpy scalars) in every
checkpoint; the weights-only unpickler rejects those classes. :func:`to_plain` rewrites them into tagged plain
dicts/lists before saving and :func:`from_plain` rebuilds them after loading (``ShiftAddAugHook`` does both in
``before_save_checkpoint`` / ``after_load_checkpoint``). Nothing is allow-listed in torch's unpickler.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_plain", "from_plain"]

_BUFFER_TAG = "__shiftaddaug_history_buffer__"
_ARRAY_TAG = "__shiftaddaug_ndarray__"


def to_plain(obj: Any) -> Any:
    """``obj`` with every ``HistoryBuffer`` / numpy array / numpy scalar replaced by plain Python types."""
    from mmengine.logging import HistoryBuffer

    if isinstance(obj, HistoryBuffer):
        return {_BUFFER_TAG: True, "log_history": to_plain(obj._log_history),
                "count_history": to_plain(obj._count_history), "max_length": int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return {_ARRAY_TAG: True, "data": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) is not dict else {}
        for key, value in obj.items():
            out[key] = to_plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    from mmengine.logging import HistoryBuffer

    if isinstance(obj, dict):
        if obj.get(_ARRAY_TAG) is True:
            return np.array(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
        if obj.get(_BUFFER_TAG) is True:
            log, count = from_plain(obj["log_history"]), from_plain(obj["count_history"])
            buffer = HistoryBuffer(max_length=int(obj["max_length"]))
            buffer._log_history, buffer._count_history = log, count
            return buffer
        out = type(obj)() if type(obj) is not dict else {}
        for key, value in obj.items():
            out[key] = from_plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj
