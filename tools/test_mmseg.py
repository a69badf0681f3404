#!/usr/bin/env python
"""Evaluate with MMSegmentation's own ``tools/test.py`` and the ShiftAddAug plugin loaded (same arguments)::

    python tools/test_mmseg.py CONFIG work_dirs/x/iter_400.pth             # training checkpoint (target mode)
    python tools/test_mmseg.py CONFIG work_dirs/x/iter_400_mf_target.pth   # exported MF target

An exported MF-target checkpoint is detected from its metadata and ``model.deploy=True`` is added to
``--cfg-options`` (the slim structure it was exported to).
"""
from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mmseg_tool import ensure_plugin_importable, run_mmseg_tool  # noqa: E402


def add_deploy_option(argv: list[str]) -> list[str]:
    """``argv`` with ``model.deploy=True`` in ``--cfg-options`` when its checkpoint is an exported MF target."""
    from shiftaddaug_plugin.mmseg_ext.export import is_exported_checkpoint
    from shiftaddaug_plugin.train.checkpoint import safe_load

    # mmseg's test.py takes CONFIG CHECKPOINT first
    if len(argv) < 2 or argv[1].startswith("-") or not osp.isfile(argv[1]):
        return argv
    try:  # weights only: a checkpoint that holds Python objects is refused, never executed
        checkpoint = safe_load(argv[1], "checkpoint", "pass an mmengine checkpoint or an exported MF target "
                               "(tools/export_mmseg.py)")
    except ValueError as err:
        raise SystemExit(f"test_mmseg: error: {err}") from None
    if not is_exported_checkpoint(checkpoint):
        return argv
    argv = list(argv)
    if "--cfg-options" in argv:
        argv.insert(argv.index("--cfg-options") + 1, "model.deploy=True")
    else:
        argv += ["--cfg-options", "model.deploy=True"]
    return argv


if __name__ == "__main__":
    ensure_plugin_importable()
    run_mmseg_tool("test.py", add_deploy_option(sys.argv[1:]))
