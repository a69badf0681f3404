"""Writing the reproduction's JSON files atomically (a killed run never leaves a half-written file).

tools/ runs without the package installed, so this does not use ``shiftaddaug_plugin.atomic``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, value: Any, **dumps_kwargs: Any) -> None:
    """``json.dumps(value, **dumps_kwargs)`` plus a newline into ``path`` through ``<name>.tmp`` and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, **dumps_kwargs) + "\n")
    tmp.replace(path)
