"""What users do to a training run: kill -9, corrupt or malicious checkpoints, divergence, a full disk. Each case
asserts the message and that nothing was lost (issue: a reliability battery)."""
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

from shiftaddaug_plugin.data import resolve_fmnist_dir

REPO = Path(__file__).resolve().parents[1]
FMNIST = resolve_fmnist_dir()
pytestmark = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists() and not (FMNIST / "train-images-idx3-ubyte").exists(),
    reason=f"Fashion-MNIST not installed in {FMNIST} (sudo apt-get install dataset-fashion-mnist)")

TINY = ["--dataset", "fashion_mnist", "--train-subset", "128", "--val-subset", "64", "--img-size", "16", "-b", "32",
        "--model", "shiftadd_mcunet", "--model-kwargs", "op=shift", "width_mult=0.25", "--aug-width-mult-list", "1.0",
        "2.0", "--aug-expand-list", "1.0", "2.0", "--bn-recal-images", "64", "--workers", "0", "--log-interval", "1",
        "--lr", "0.05", "--warmup-epochs", "0", "--seed", "5", "--width-aug-stop", "1.0"]


def _main(argv: list[str]) -> int:
    from shiftaddaug_plugin.train.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 2-epoch run: its checkpoint and export are the valid files the cases start from."""
    out = tmp_path_factory.mktemp("ok")
    assert _main([*TINY, "--epochs", "2", "--output", str(out), "--experiment", "run"]) == 0
    return out / "run"


def _broken_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "random bytes": os.urandom(4096), "empty": b""}
    out = {}
    for name, payload in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pth.tar"
        path.write_bytes(payload)
        out[name] = path
    return out


class _Exploit:
    """A pickle that runs a command when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.marker}",))


def test_corrupted_checkpoints_give_one_clear_error_and_touch_nothing(finished: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = _digests(finished)
    for name, path in _broken_files(tmp_path, finished / "last.pth.tar").items():
        rc = _main([*TINY, "--epochs", "3", "--resume", str(path), "--output", str(finished.parent),
                    "--experiment", "run"])
        err = capsys.readouterr().err
        assert rc == 2, name
        assert str(path) in err and "truncated or corrupted" in err and "--resume" in err, (name, err)
        assert "Traceback" not in err
    assert _digests(finished) == before  # not even log.txt was appended


def test_checkpoint_of_another_model_is_named(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digests(finished)
    argv = [a if a != "width_mult=0.25" else "width_mult=0.5" for a in TINY]
    rc = _main([*argv, "--epochs", "3", "--resume", str(finished / "last.pth.tar"), "--output",
                str(finished.parent), "--experiment", "run"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds the weights of a different model" in err and "--model-kwargs" in err
    assert _digests(finished) == before


def test_malicious_pickles_are_refused_and_never_run(finished: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"epoch": 1, "state_dict": _Exploit(marker)}, evil)
    rc = _main([*TINY, "--epochs", "3", "--resume", str(evil), "--output", str(tmp_path), "--experiment", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and "was refused" in err and "not executed" in err
    evil_export = tmp_path / "exported_target.pth"
    torch.save({"conv_stem.weight": _Exploit(marker)}, evil_export)
    (tmp_path / "exported_target.json").write_text((finished / "exported_target.json").read_text())
    rc = _main(["--validate-exported", str(evil_export), "--dataset", "fashion_mnist", "--val-subset", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and "was refused" in err
    from shiftaddaug_plugin.deploy.cli import main as export_main

    assert export_main([str(evil_export), "--onnx", str(tmp_path / "e.onnx")]) == 2
    assert "was refused" in capsys.readouterr().err
    assert not marker.exists()  # the command never ran
    assert not (tmp_path / "x").exists()


def test_divergence_stops_with_the_last_good_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = _main([*TINY, "--epochs", "4", "--lr", "1e12", "--output", str(tmp_path), "--experiment", "div",
                "--max-nonfinite-steps", "2"])
    captured = capsys.readouterr()
    assert rc == 3 and "last checkpoint (last.pth.tar) is intact" in captured.err and "Traceback" not in captured.err
    if "non-finite training loss" in captured.err:  # the loss diverged first: two steps skipped, the third stops
        assert "(--max-nonfinite-steps 2)" in captured.err and captured.out.count("step skipped") == 2
    else:  # the weights overflowed while the loss was still finite
        assert "non-finite weights after epoch" in captured.err
    last = tmp_path / "div" / "last.pth.tar"
    if last.exists():  # the epochs before the divergence: a good checkpoint, finite weights, never a torn one
        ckpt = torch.load(last, weights_only=True)
        assert ckpt["epoch"] < 4
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not [p for p in (tmp_path / "div").iterdir() if p.name.endswith(".tmp")]


def test_full_disk_keeps_the_previous_checkpoint(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    import shiftaddaug_plugin.train.checkpoint as ckpt_mod

    out = tmp_path / "full"
    shutil.copytree(finished, out)
    good = _digests(out)

    def no_space(obj, handle) -> None:  # noqa: ANN001 - torch.save's signature
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", no_space)
    rc = _main([*TINY, "--epochs", "3", "--resume", str(out / "last.pth.tar"), "--output", str(tmp_path),
                "--experiment", "full"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Earlier checkpoints are intact" in err
    assert "Traceback" not in err
    now = _digests(out)
    assert now["last.pth.tar"] == good["last.pth.tar"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the partial temporary file was removed


def _read_only(folder: Path, cmd: list[str]) -> list[str]:
    """``cmd`` run with ``folder`` read-only. As root, file modes do not stop writes, so the command runs in its
    own mount namespace with ``folder`` bind-mounted read-only (``unshare -m``, util-linux); otherwise the folder's
    folders' modes are set to ``0o555``."""
    if os.geteuid() != 0:
        for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            os.chmod(sub, 0o555)
        return cmd
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *cmd]


def test_read_only_output_folder_gives_one_clear_error_and_changes_nothing(finished: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ro"
    shutil.copytree(finished, out / "run")
    before = _digests(out / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "shiftaddaug_plugin.train.cli", *TINY, "--epochs", "3", "--resume",
           str(out / "run" / "last.pth.tar"), "--output", str(out), "--experiment", "run"]
    try:
        proc = subprocess.run(_read_only(out, cmd), env=env, capture_output=True, text=True, timeout=600)
    finally:
        for sub in (out, out / "run"):
            os.chmod(sub, 0o755)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "could not write into the output folder" in proc.stderr and "Traceback" not in proc.stderr
    assert "Read-only file system" in proc.stderr or "Permission denied" in proc.stderr
    assert _digests(out / "run") == before  # nothing changed, nothing added


@pytest.mark.slow
def test_adder_layer_peak_memory_stays_within_2x_of_conv() -> None:
    """AdderConv2d(64, 64, 3) forward + backward on (128, 64, 56, 56) vs F.conv2d on the same shapes (peak bytes of
    torch's CPU allocator above the starting level; a generous bound, not a timing)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _timing import fwd_bwd_step
        from ops import peak_extra_mb
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from shiftaddaug_plugin.layers.adder import AdderConv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, 1, 1, bias=False)
    adder = AdderConv2d.from_float(conv)
    x = torch.randn(128, 64, 56, 56, requires_grad=True)
    grad = torch.randn(128, 64, 56, 56)
    conv_step, adder_step = fwd_bwd_step(conv, x, grad), fwd_bwd_step(adder, x, grad)
    conv_step()
    adder_step()  # compiles this shape
    conv_mb, adder_mb = peak_extra_mb(conv_step), peak_extra_mb(adder_step)
    activation_mb = x.numel() * 4 / 2**20
    assert conv_mb > activation_mb  # the measurement sees at least the output of the conv
    assert adder_mb <= 2.0 * conv_mb, (adder_mb, conv_mb)


@pytest.mark.slow
def test_kill_minus_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "shiftaddaug_plugin.train.cli", *TINY, "--epochs", "3", "--train-subset", "256",
           "--output", str(tmp_path)]
    assert subprocess.run([*cmd, "--experiment", "straight"], env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen([*cmd, "--experiment", "killed"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = tmp_path / "killed"
    deadline = time.time() + 600
    assert proc.stdout is not None
    for line in proc.stdout:  # kill in the middle of epoch 1, after epoch 0's checkpoint
        if "epoch 1 [" in line and (killed / "last.pth.tar").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for path in killed.iterdir():
        assert not path.name.endswith(".tmp"), path
        if path.suffix in (".tar", ".pth"):
            torch.load(path, weights_only=True)  # every file still loads
    assert torch.load(killed / "last.pth.tar", weights_only=True)["epoch"] == 1
    resumed = subprocess.run([*cmd, "--experiment", "killed", "--resume", str(killed / "last.pth.tar")], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "straight" / "exported_target.pth", weights_only=True)
    b = torch.load(killed / "exported_target.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.mmseg
def test_mmseg_tools_refuse_malicious_and_corrupted_checkpoints(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _Exploit(marker)}, evil)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(os.urandom(2048))
    test_tool = _tool("test_mmseg")
    for path, message in ((evil, "was refused"), (broken, "truncated or corrupted")):
        with pytest.raises(SystemExit, match=message):
            test_tool.add_deploy_option(["config.py", str(path)])
    config = REPO / "configs" / "mmseg" / "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py"
    export_tool = _tool("export_mmseg")
    for path, message in ((evil, "was refused"), (broken, "truncated or corrupted")):
        with pytest.raises(SystemExit, match=message):
            export_tool.main([str(config), str(path)])
    assert not marker.exists()


@pytest.mark.parametrize("extra, message", [
    (["--model", "nonexistent_model"], "Unknown model"),
    (["--model-kwargs", "op=conv"], "unknown op 'conv'; use one of"),
    (["--model-kwargs", "width_mult=0"], "width_mult=0 must be > 0"),
    (["--aug-expand-list", "0.5", "1.0"], "multipliers must be"),
    (["-b", "0"], "--batch-size=0"),
    (["--epochs", "0"], "--epochs=0"),
    (["--amp", "--device", "cpu"], "--amp with float16 needs a CUDA device"),
    (["--max-nonfinite-steps", "-1"], "--max-nonfinite-steps=-1"),
    (["--data-dir", "/nonexistent/fmnist"], "apt-get install dataset-fashion-mnist"),
    (["--no-aug", "--aug-width-mult-list", "1.0", "2.0"], "--no-aug trains the target network alone, so "
                                                          "--aug-width-mult-list would be ignored"),
    (["--no-aug", "--sort-scope=augmented", "--aug-alpha", "0.5"], "--aug-alpha, --sort-scope would be ignored; "
                                                                   "drop them or drop --no-aug"),
])
def test_bad_arguments_give_one_clear_error(extra: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dataset", "fashion_mnist", "--train-subset", "32", "--val-subset", "16", "-b", "16", "--epochs", "1",
            "--workers", "0", "--output", str(tmp_path), "--experiment", "bad", *extra]
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "bad" / "last.pth.tar").exists()
