"""Suite-wide rules. Under ``CI=true`` a skipped test fails the run: CI installs the whole stack (mmcv, mmseg,
Fashion-MNIST), so a skip there means a test silently stopped testing."""
from __future__ import annotations

import os

import pytest


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
