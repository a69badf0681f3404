"""Suite-wide rules. Under ``CI=true`` a skipped test fails the run: CI installs the whole stack (mmcv, mmseg,
Fashion-MNIST), so a skip there means a test silently stopped testing."""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = list(reporter.stats.get("skipped", [])) if reporter is not None else []
    if skipped:
        lines = [f"  {getattr(r, 'nodeid', '?')}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}"
                 for r in skipped[:20]]
        message = (f"\nCI=true: {len(skipped)} test(s) were skipped, which CI does not allow (a skipped test tests "
                   "nothing). Install what they need (make setup does: mmcv, mmsegmentation, dataset-fashion-mnist):\n"
                   + "\n".join(lines))
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """``load_benchmark("ops")`` imports ``benchmarks/ops.py`` as module ``bench_ops`` (registered in
    ``sys.modules``: dataclasses look their module up there)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", _BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
