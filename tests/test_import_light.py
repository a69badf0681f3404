"""`import shiftaddaug_plugin` stays light (docs/ARCHITECTURE.md, §6): no timm / mmengine / mmseg / mmcv, no
dynamo/inductor (compilation machinery), no CUDA initialisation. Checked in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("timm", "mmengine", "mmseg", "mmcv", "torch._dynamo", "torch._inductor")
#: imported one after the other in one fresh interpreter; the loaded set only grows, so a clean report after a
#: step means that step (and every earlier one) is light
MODULES = ("shiftaddaug_plugin", "shiftaddaug_plugin.functional.shift", "shiftaddaug_plugin.layers.shift")

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys, types

    HEAVY = {heavy!r}

    def heavy_loaded():
        return sorted(h for h in HEAVY if any(n == h or n.startswith(h + '.') for n in sys.modules))

    report = {{}}
    for module in {modules!r}:
        importlib.import_module(module)
        import torch
        report[module] = {{"heavy": heavy_loaded(), "cuda_initialized": torch.cuda.is_initialized()}}
    sys.modules["mmseg.fake_probe_check"] = types.ModuleType("mmseg.fake_probe_check")  # the probe must see it
    report["probe_self_check"] = heavy_loaded()
    print(json.dumps(report))
    """
)


def test_import_is_light() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, modules=MODULES)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "mmseg" in report.pop("probe_self_check")
    for module in MODULES:
        assert report[module]["heavy"] == [], f"import {module} pulled in {report[module]['heavy']}"
        assert report[module]["cuda_initialized"] is False, f"import {module} initialised CUDA"
