"""The reliability battery for MMSegmentation training (``tools/train_mmseg.py``): kill -9 mid-iteration then
``--resume``, divergence, a full disk. Each case asserts the message and that nothing was lost (issue: a
reliability battery; the timm trainer's cases are in tests/test_reliability.py)."""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

try:
    import mmcv.ops  # noqa: F401
    import mmseg  # noqa: F401

    _MMSEG_ERROR = None
except Exception as err:  # noqa: BLE001 - any import failure means the stack is unusable
    _MMSEG_ERROR = f"{type(err).__name__}: {err}"

pytestmark = [
    pytest.mark.mmseg,
    pytest.mark.skipif(_MMSEG_ERROR is not None, reason=f"mmcv with compiled ops / mmseg unusable: {_MMSEG_ERROR}"),
]

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "train_mmseg.py"
CONFIG = REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"


def _options(data_root: Path, max_iters: int = 12, interval: int = 4, **extra: str) -> list[str]:
    """The embedded config shrunk to seconds: 48 train / 16 val scenes, batch 4, no worker processes; dropout stays
    on (the resumed run must restore torch's RNG to match)."""
    opts = {
        "train_dataloader.batch_size": "4", "train_dataloader.num_workers": "0",
        "train_dataloader.persistent_workers": "False", "train_dataloader.dataset.num_images": "48",
        "train_dataloader.dataset.data_root": str(data_root),
        "val_dataloader.batch_size": "4", "val_dataloader.num_workers": "0",
        "val_dataloader.persistent_workers": "False", "val_dataloader.dataset.num_images": "16",
        "val_dataloader.dataset.data_root": str(data_root),
        "train_cfg.max_iters": str(max_iters), "train_cfg.val_interval": str(interval),
        "default_hooks.checkpoint.interval": str(interval), "default_hooks.logger.interval": "1",
        "custom_hooks.0.recalib_images": "8", "custom_hooks.0.sort_interval": "2",
        "model.convert_cfg.aug_width_mult_list": "[1.0,1.6]",
        **extra,
    }
    return ["--cfg-options", *(f"{k}={v}" for k, v in opts.items())]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}


def _train(work_dir: Path, data_root: Path, *extra: str, **options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN), str(CONFIG), "--work-dir", str(work_dir), *extra,
                           *_options(data_root, **options)], env=_env(), capture_output=True, text=True, timeout=900)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _no_torn_files(folder: Path) -> None:
    for path in folder.iterdir():
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".pth":
            torch.load(path, map_location="cpu", weights_only=True)  # every checkpoint still loads


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenes")


@pytest.mark.slow
def test_kill_minus_9_mid_iteration_then_resume_equals_an_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight", data_root)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(TRAIN), str(CONFIG), "--work-dir", str(killed),
                             *_options(data_root)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 600
    assert proc.stdout is not None
    for line in proc.stdout:  # kill in the middle of iteration 6..7, after iter_4.pth and its export
        if "Iter(train) [ 6/12]" in line and (killed / "iter_4_mf_target.pth").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _no_torn_files(killed)
    assert (killed / "last_checkpoint").read_text().strip().endswith("iter_4.pth")
    resumed = _train(killed, data_root, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "iter_12.pth", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(killed / "iter_12.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    ea = torch.load(tmp_path / "straight" / "iter_12_mf_target.pth", map_location="cpu", weights_only=True)
    eb = torch.load(killed / "iter_12_mf_target.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(ea["state_dict"][k], eb["state_dict"][k]) for k in ea["state_dict"])


@pytest.mark.slow
def test_divergence_stops_with_one_message_and_intact_checkpoints(data_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "div"
    proc = _train(work, data_root, max_iters=8, interval=2, **{"optim_wrapper.optimizer.lr": "1e12",
                                                                "optim_wrapper.max_nonfinite_steps": "1"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_mmseg: error: non-finite") and "intact" in last, last
    assert "Traceback" not in proc.stderr
    if "non-finite training loss" in last:  # one step skipped (allowed), the second stops
        assert "max_nonfinite_steps=1" in last and "step skipped (1/1 allowed" in proc.stdout + proc.stderr
    _no_torn_files(work)
    for path in work.glob("iter_*.pth"):  # what was written before the divergence holds finite weights
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


def test_full_disk_keeps_the_previous_checkpoint(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shiftaddaug_plugin.atomic as atomic

    sys.path.insert(0, str(REPO / "tools"))
    try:
        from _mmseg_tool import run_mmseg_tool
    finally:
        sys.path.remove(str(REPO / "tools"))
    work = tmp_path / "full"
    first = _train(work, data_root, max_iters=2, interval=2)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _digests(work)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)  # the temporary file was written, the disk then filled up
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_mmseg_tool("train.py", [str(CONFIG), "--work-dir", str(work), "--resume",
                                        *_options(data_root, max_iters=4, interval=2)])
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "checkpoints written so far are intact" in err
    now = _digests(work)
    assert now["iter_2.pth"] == before["iter_2.pth"] and now["last_checkpoint"] == before["last_checkpoint"]
    assert "iter_4.pth" not in now  # never a torn file
    _no_torn_files(work)
