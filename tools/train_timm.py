#!/usr/bin/env python3
"""ShiftAddAug augmentation training of a timm model: thin shim over ``shiftaddaug-train``.

    python tools/train_timm.py -c configs/timm/fashion_mnist_mcunet_shiftaug.yaml --output runs/fmnist
    torchrun --nproc_per_node 2 tools/train_timm.py -c ... --device cpu      # DDP (gloo on CPU)

All flags: ``python tools/train_timm.py --help`` (timm ``train.py`` names + ShiftAddAug flags).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from shiftaddaug_plugin.train.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
