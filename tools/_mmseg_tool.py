"""Shared helper of tools/train_mmseg.py and tools/test_mmseg.py: run one of mmseg's own tools (shipped in the
wheel at ``mmseg/.mim/tools/``) unchanged, with the ShiftAddAug plugin registered first (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import errno
import importlib.util
import os.path as osp
import runpy
import sys

#: The errors of a full disk or an unwritable folder (reported in one line; anything else keeps its traceback).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


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
    from shiftaddaug_plugin.augment import NonFiniteLossError

    path = mmseg_tool_path(name)
    sys.argv = [path, *argv]
    try:
        runpy.run_path(path, run_name="__main__")
    except NonFiniteLossError as err:  # a diverged run: one message and exit code 3, as shiftaddaug-train
        print(f"{name[:-3]}_mmseg: error: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        print(f"{name[:-3]}_mmseg: error: could not write into the work dir ({err}); free space or choose another "
              "--work-dir. The checkpoints written so far are intact (checkpoints are replaced atomically)",
              file=sys.stderr)
        raise SystemExit(2) from None
