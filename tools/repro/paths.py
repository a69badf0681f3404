"""Where the reproduction reads configs and writes results."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = REPO / "configs" / "timm" / "fashion_mnist_mcunet_shiftaug.yaml"
SEG_CONFIG = REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"
#: segmentation model key (tools/repro/plan.py GROUPS) -> its config
SEG_CONFIGS = {
    "mbv2_tiny_fcn": SEG_CONFIG,
    "mbv2_tiny_fcn_brain":
        REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb8-2000it_brain-mri-tissue-96x80.py",
    "mbv2_tiny_fcn_nuclei":
        REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-1000it_nuclei-64x64.py",
}
#: segmentation models whose data has its own test split (validation on 'val' chooses, 'test' reports)
SEG_WITH_TEST_SPLIT = frozenset({"mbv2_tiny_fcn_brain", "mbv2_tiny_fcn_nuclei"})
DEFAULT_RESULTS = REPO / "results"
