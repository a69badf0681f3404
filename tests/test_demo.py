"""``make demo`` (tools/demo.py): both runs train the same MF target with the same data and budget, the baseline
without augmentation; the operator chosen on the held-out split (adder) is the default."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from shiftaddaug_plugin.train.args import parse_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("shiftaddaug_demo", REPO / "tools" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_args(cmd: list[str]):
    assert cmd[:3] == [sys.executable, "-m", "shiftaddaug_plugin.train.cli"]
    return parse_args(cmd[3:])


@pytest.mark.parametrize("op", [None, "shift", "adder"])
def test_demo_runs_differ_only_in_augmentation(demo, op: str | None) -> None:
    args = demo._parse([] if op is None else ["--op", op])
    expected = op or "adder"
    aug = _cli_args(demo._train_cmd(args, "shiftaddaug", []))
    base = _cli_args(demo._train_cmd(args, "baseline", ["--no-aug"]))
    assert aug.model_kwargs["op"] == base.model_kwargs["op"] == expected
    assert aug.model == base.model == "shiftadd_mcunet"
    assert not aug.no_aug and base.no_aug
    for name in ("train_subset", "val_subset", "epochs", "batch_size", "lr", "img_size", "seed", "bn_recal_images"):
        assert getattr(aug, name) == getattr(base, name), name


def test_demo_rejects_an_unknown_operator(demo, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo._parse(["--op", "mult"])
    assert "invalid choice: 'mult'" in capsys.readouterr().err
