"""Where a run came from: code revision, library versions and processor, written next to each run at launch.

Two runs of one command with the same seed are bit-identical on one machine and one code revision, but not
necessarily across them: floating-point kernels may differ between processors and library versions, a code change
that alters rounding anywhere changes every later step, and a tiny network's training trajectory amplifies such
differences. A result is traced back to what produced it only with this record (``results.json`` carries it per
run).
"""
from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from repro.files import write_json_atomically

FILE = "provenance.json"


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(repo: Path) -> dict[str, Any]:
    """Code revision (``commit``, ``dirty``: tracked files changed), Python / torch / timm versions and the
    processor; ``commit`` is ``None`` outside a git checkout."""
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": None if status is None else bool(status),
            "python": platform.python_version(), "torch": _version("torch"), "timm": _version("timm"),
            "cpu": _cpu_model()}


def record_launch(run_dir: Path, environment: dict[str, Any]) -> None:
    """Append ``environment`` to ``run_dir/provenance.json`` (a list: a resumed run has one entry per launch)."""
    launches = read_provenance(run_dir)
    launches.append(environment)
    write_json_atomically(run_dir / FILE, launches, indent=1)


def read_provenance(run_dir: Path) -> list[dict[str, Any]]:
    """The launches recorded for ``run_dir`` (``[]`` for runs made before this record existed or unreadable)."""
    path = run_dir / FILE
    if not path.is_file():
        return []
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
