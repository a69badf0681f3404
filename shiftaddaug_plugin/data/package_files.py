"""Data files shipped inside installed wheels (nilearn's MNI152 template, stardist's nuclei image).

The file is located through ``importlib.util.find_spec`` only: the package itself is never imported (nilearn and
stardist are installed with ``--no-deps`` for their data; importing them would need scikit-learn / TensorFlow).
"""
from __future__ import annotations

import importlib.util
import os.path as osp

__all__ = ["MissingDataPackageError", "package_file"]


class MissingDataPackageError(FileNotFoundError):
    """A data wheel, or a file inside it, is missing; the message names the install command."""


def package_file(package: str, relative_path: str, install_hint: str) -> str:
    """Absolute path of ``relative_path`` inside the installed top-level ``package``.

    Raises:
        MissingDataPackageError: the package is not installed or lacks the file (an incompatible version).
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDataPackageError(
            f"the data package {package!r} is not installed; install it with `{install_hint}` "
            "(`make seg-data` installs every segmentation data package)")
    for root in locations:
        path = osp.join(root, relative_path)
        if osp.isfile(path):
            return path
    raise MissingDataPackageError(
        f"the installed {package!r} ({locations[0]}) has no {relative_path!r}; reinstall the pinned version "
        f"with `{install_hint}` (versions in requirements/constraints.txt)")
