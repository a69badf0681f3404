#!/usr/bin/env python
"""Shim: ``python tools/nas_search.py ...`` = ``python -m shiftaddaug_plugin.nas.cli ...`` (see docs/nas.md)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shiftaddaug_plugin.nas.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
