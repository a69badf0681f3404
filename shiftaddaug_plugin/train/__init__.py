"""timm-based ShiftAddAug augmentation training entry point (docs/algorithms.md §4, docs/ARCHITECTURE.md).

Console script ``shiftaddaug-train`` (= :func:`shiftaddaug_plugin.train.cli.main`). The sub-modules import timm;
this package ``__init__`` stays light and only names them:

* :mod:`.args`          timm ``train.py``-style CLI parser + yaml ``--config``
* :mod:`.data`          datasets / loaders (embedded Fashion-MNIST or any timm dataset)
* :mod:`.augtrain`      the joint-loss training task, epoch loop and evaluation
* :mod:`.checkpoint`    atomic, ``weights_only``-loadable checkpoints, resume, exported-model save/load
* :mod:`.cli`           ``main(argv=None)``

The block-variant schedule (docs/algorithms.md §6) is the package-wide :mod:`shiftaddaug_plugin.block_variant`.
"""
from __future__ import annotations

__all__ = ["main"]


def main(argv: "list[str] | None" = None) -> int:
    """Run ``shiftaddaug-train`` (see :func:`shiftaddaug_plugin.train.cli.main`)."""
    from .cli import main as _main

    return _main(argv)
