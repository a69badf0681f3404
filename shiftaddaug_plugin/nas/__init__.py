"""Two-stage NAS of ShiftAddAug §3.4 (docs/algorithms.md §7): supernet -> depth-augmented subnet -> target under
hardware constraints, with Optuna's evolutionary (NSGA-II) search. See docs/nas.md.

* :mod:`.space`        search space, :class:`Arch` <-> timm block strings / JSON (light: no torch import)
* :mod:`.supernet`     weight-sharing multiplicative supernet (elastic kernel / expand / depth / width), sandwich
  training, ``extract(arch)`` -> timm ``EfficientNet``
* :mod:`.stage2`       target selection inside a deep subnet, depth-augmentation blocks, target export
* :mod:`.cost`         hardware cost of an arch (cost model) and :class:`Constraints`
* :mod:`.search`       Optuna study (SQLite / any RDB URL, resumable, several workers)
* :mod:`.custom_model` timm entrypoint ``shiftadd_custom(arch=<json>)`` (imports timm)
* :mod:`.cli`          ``python -m shiftaddaug_plugin.nas.cli {train-supernet,search}``

This ``__init__`` imports nothing heavy; import the sub-modules.
"""
from __future__ import annotations

__all__ = ["space", "supernet", "stage2", "cost", "search", "custom_model", "data", "cli"]
