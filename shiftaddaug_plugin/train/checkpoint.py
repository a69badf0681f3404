"""Checkpoints of ``shiftaddaug-train`` (docs/ARCHITECTURE.md): atomic, ``torch.load(weights_only=True)``-loadable,
resumable.

* :func:`atomic_save` writes to a temporary file in the same folder, flushes it to disk and ``os.replace``-s it over
  the destination: an interruption leaves either the old or the new file, never a torn one.
* Checkpoints contain only tensors and plain Python types (dict/list/tuple/str/int/float/bool/None), so they load
  with ``weights_only=True`` (the default since torch 2.6). RNG states are converted accordingly (numpy's key array
  becomes a list of ints). :func:`to_plain` enforces this before writing.
* ``exported_target.pth`` is the bare ``state_dict`` of ``export(model)`` (timm's ``load_checkpoint`` and
  ``validate.py --checkpoint`` read it as is) next to ``exported_target.json``, the recipe that rebuilds the slim
  network with ``timm.create_model`` (:func:`load_exported`).
"""
from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from shiftaddaug_plugin import register_timm_models
from shiftaddaug_plugin.convert import ConvertConfig, convert, export

from ..atomic import atomic_write, atomic_write_text

__all__ = [
    "atomic_save", "atomic_write_text", "to_plain", "load_checkpoint", "capture_rng_state", "restore_rng_state",
    "save_exported", "load_exported", "safe_load", "load_state", "EXPORTED_WEIGHTS", "EXPORTED_META",
]

EXPORTED_WEIGHTS = "exported_target.pth"
EXPORTED_META = "exported_target.json"
_PLAIN = (str, int, float, bool, type(None))



def to_plain(obj: Any, path: str = "checkpoint") -> Any:
    """Return ``obj`` with tuples/lists/dicts rebuilt and every leaf checked to be a tensor or a plain Python value;
    numpy scalars/arrays become Python numbers / lists. ``TypeError`` naming the offending entry otherwise."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, _PLAIN):
                raise TypeError(f"{path}: key {key!r} of type {type(key).__name__} is not a plain Python value")
            out[key] = to_plain(value, f"{path}[{key!r}]")
        return out
    if isinstance(obj, tuple):
        return tuple(to_plain(v, f"{path}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, list):
        return [to_plain(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{path}: {type(obj).__name__} cannot be stored in a weights_only checkpoint; convert it to "
                    "tensors / plain Python types")



def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(to_plain(obj), path)`` through a temporary file + ``os.replace`` (never a partial file)."""
    plain = to_plain(obj)
    atomic_write(path, lambda handle: torch.save(plain, handle))


def safe_load(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one clear ``ValueError`` per failure: a
    missing file, a truncated or corrupted file, or a pickle holding Python objects (which ``weights_only`` refuses
    without running them). ``what`` names the file's role, ``fix`` says what to pass instead."""
    if not Path(path).is_file():
        raise ValueError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        lines = [ln.strip() for ln in text.split("WeightsUnpickler error:")[-1].splitlines() if ln.strip()]
        objects = [ln for ln in lines if "GLOBAL" in ln.upper() and ("unsupported" in ln.lower()
                                                                      or "blocked" in ln.lower())]
        reason = (objects or lines or [text])[0][:200]
        if not objects:  # no Python object in the pickle: garbage bytes
            raise ValueError(f"{what} {path} is truncated or corrupted (not a torch checkpoint: {reason}); "
                             f"{fix}") from None
        raise ValueError(f"{what} {path} was refused: it holds Python objects, not only weights ({reason}); it was "
                         f"not executed. Only load files you trust; {fix}") from None
    except Exception as err:  # noqa: BLE001 - any failure to parse garbage bytes (EOFError, IndexError, zip errors)
        raise ValueError(f"{what} {path} is truncated or corrupted ({type(err).__name__}: {str(err)[:120]}); "
                         f"{fix}") from None


def load_state(model: nn.Module, state: Mapping[str, Any], path: str | os.PathLike[str], fix: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a ``ValueError`` naming the file when the weights belong
    to another model or other model kwargs (missing / unexpected keys, other shapes)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n\t")[1][:200] if "\n\t" in str(err) else str(err)[:200]
        raise ValueError(f"{path} holds the weights of a different model ({first}); {fix}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`safe_load` of a trainer checkpoint; ``ValueError`` if the file is not one (no ``epoch`` /
    ``state_dict``)."""
    ckpt = safe_load(path, "checkpoint", "pass <output>/last.pth.tar of the run to --resume")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path} is not a shiftaddaug-train checkpoint (expected keys 'epoch' and 'state_dict'); "
                         "resume from <output>/last.pth.tar")
    return ckpt


# ------------------------------------------------------------------------------------------------- RNG state
def capture_rng_state(width_rng: random.Random | None = None) -> dict[str, Any]:
    """Python / numpy / torch (CPU and CUDA) RNG states plus the width sampler's, as plain types and tensors."""
    mt, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": mt, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if width_rng is not None:
        state["width_rng"] = width_rng.getstate()
    return state


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def restore_rng_state(state: Mapping[str, Any], width_rng: random.Random | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if width_rng is not None and "width_rng" in state:
        width_rng.setstate(_as_tuple(state["width_rng"]))


# ------------------------------------------------------------------------------------------------- exported model
def save_exported(out_dir: str | os.PathLike[str], slim: nn.Module, meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``exported_target.pth`` (the slim model's ``state_dict``) and ``exported_target.json`` (``meta``: model
    name, its keyword arguments, ``num_classes``, input size, mean/std...). Returns both paths."""
    folder = Path(out_dir)
    weights, meta_path = folder / EXPORTED_WEIGHTS, folder / EXPORTED_META
    atomic_save(slim.state_dict(), weights)
    atomic_write_text(json.dumps(to_plain(dict(meta)), indent=2, sort_keys=True) + "\n", meta_path)
    return weights, meta_path


def load_exported(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the exported slim network from ``exported_target.pth`` (+ the ``.json`` next to it) with
    ``timm.create_model`` and load its weights (strict, ``weights_only=True``). Returns ``(model in eval mode, meta)``.
    """
    import timm

    register_timm_models()

    weights = Path(path)
    if weights.is_dir():
        weights = weights / EXPORTED_WEIGHTS
    meta_path = weights.with_suffix(".json")
    if not weights.is_file() or not meta_path.is_file():
        raise ValueError(f"exported model {weights} (+ {meta_path.name}) not found; train with shiftaddaug-train "
                         "first (it writes both into --output)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    common = dict(pretrained=False, num_classes=meta["num_classes"], in_chans=meta["input_size"][0])
    if meta.get("rebuild", "entrypoint") == "entrypoint":  # shiftadd_*: the entrypoint builds the slim MF network
        model = timm.create_model(meta["model"], **common, **meta.get("model_kwargs", {}))
    else:  # any timm model: convert without augmentation, then export (what the trainer exported)

        dense = timm.create_model(meta["model"], **common, **meta.get("model_kwargs", {}))
        config = ConvertConfig(**meta["convert_config"], aug_width_mult_list=[1.0], aug_expand_list=[1.0])
        model = export(convert(dense, config, example_input=torch.zeros(1, *meta["input_size"])))
    fix = "pass the exported_target.pth written by shiftaddaug-train together with its .json"
    state = safe_load(weights, "exported model", fix)
    load_state(model, state, weights, fix)
    return model.to(device).eval(), meta
