"""shiftaddaug_plugin.atomic: a failed write never corrupts the previous file nor leaves a temporary behind."""
from __future__ import annotations

import pytest
import torch

from shiftaddaug_plugin.atomic import atomic_write, atomic_write_text


def test_failed_write_keeps_previous_file_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "ckpt.pth"
    atomic_write(target, lambda h: torch.save({"w": torch.arange(3)}, h))
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))

    def broken(handle):
        handle.write(b"partial bytes")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt.pth"]


def test_text_write_replaces_content(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text("first\n", path)
    atomic_write_text("second\n", path)
    assert path.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
