#!/usr/bin/env python
"""Train with MMSegmentation's own ``tools/train.py`` and the ShiftAddAug plugin loaded (same arguments)::

    python tools/train_mmseg.py configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py \
        --work-dir work_dirs/fmnist_fcn [--resume] [--cfg-options train_cfg.max_iters=100]

Distributed: ``torchrun --nproc_per_node=N tools/train_mmseg.py CONFIG --launcher pytorch``.
"""
from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mmseg_tool import run_mmseg_tool  # noqa: E402

if __name__ == "__main__":
    run_mmseg_tool("train.py", sys.argv[1:])
