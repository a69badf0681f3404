"""Shared helper of tools/train_mmseg.py and tools/test_mmseg.py: run one of mmseg's own tools (shipped in the
wheel at ``mmseg/.mim/tools/``) unchanged, with the ShiftAddAug plugin registered first (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import importlib.util
import os.path as osp
import runpy
import sys


def mmseg_tool_path(name: str) -> str:
    """Path of ``mmseg/.mim/tools/<name>`` of the installed mmsegmentation."""
    spec = importlib.util.find_spec("mmseg")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mmsegmentation is not installed: pip install 'shiftaddaug_plugin[mmseg]'")
    path = osp.join(list(spec.submodule_search_locations)[0], ".mim", "tools", name)
    if not osp.isfile(path):
        raise SystemExit(f"{path} is missing: this mmsegmentation wheel does not ship its tools; reinstall it")
    return path


def ensure_plugin_importable() -> None:
    """Running from a source checkout without ``pip install -e .``: put the checkout on ``sys.path``."""
    if importlib.util.find_spec("shiftaddaug_plugin") is None:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_mmseg_tool(name: str, argv: list[str]) -> None:
    """Import the plugin (registrations), then execute mmseg's tool as ``__main__`` with ``argv``."""
    ensure_plugin_importable()
    import shiftaddaug_plugin.mmseg_ext  # noqa: F401  (registers segmentor, hook, dataset, ops, timm models)

    path = mmseg_tool_path(name)
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name="__main__")
