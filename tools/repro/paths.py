"""Where the reproduction reads configs and writes results."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = REPO / "configs" / "timm" / "fashion_mnist_mcunet_shiftaug.yaml"
SEG_CONFIG = REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"
DEFAULT_RESULTS = REPO / "results"
