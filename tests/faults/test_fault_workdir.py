"""One workdir, one run (an flock that dies with its process); no step is ever logged twice after
an interruption, even one before the first checkpoint; a full disk is one clear error."""

import errno
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from fault_utils import CLI_FLAGS, strict_rows, tb_unique, tiny_config, train_cli

from dlkit.errors import RunError
from dlkit.train import train_and_evaluate
from dlkit.train.workdir import exclusive


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    with exclusive(tmp_path):
        proc = train_cli(tmp_path, *CLI_FLAGS)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        f"error: workdir {tmp_path} is in use by a running training (pid {os.getpid()} on host "
        f"{socket.gethostname()}); wait for it to end or use another --workdir"
    ]
    assert not (tmp_path / "checkpoints").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        "import sys, time; from dlkit.train.workdir import exclusive\n"
        "with exclusive(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunError, match=f"pid {holder.pid} on host"):
        with exclusive(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with exclusive(tmp_path):  # taken at once: the lock died with its process
        pass


def test_killed_before_the_first_checkpoint_starts_metrics_afresh(tmp_path):
    proc = train_cli(tmp_path, *CLI_FLAGS)
    for line in proc.stdout:  # logged steps 10, 20: no checkpoint yet (first at 100)
        if line.startswith("step 20:"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    flags = [f for f in CLI_FLAGS if "num_train_steps" not in f] + ["--config.num_train_steps=30"]
    rerun = train_cli(tmp_path, *flags)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert [r["step"] for r in strict_rows(tmp_path) if "train_loss" in r] == [10, 20, 30]
    assert sorted({s for s, t, _ in tb_unique(tmp_path) if t == "train_loss"}) == [10, 20, 30]


def test_metrics_resume_at_the_checkpoint_without_repeats(tmp_path):
    train_and_evaluate(tiny_config(), tmp_path, stop_after_step=30)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a run that died after logging step 35
        f.write('{"step": 35, "train_loss": 1.0}\n{"step": 42, "train_lo')
    train_and_evaluate(tiny_config(), tmp_path)
    steps = [r["step"] for r in strict_rows(tmp_path) if "train_loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    tb_unique(tmp_path)


def _mount_tmpfs(path: pathlib.Path, size: str) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("filling a tiny disk needs root to mount a tmpfs")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("this platform cannot mount a tmpfs (no CAP_SYS_ADMIN)")


def _fill(path: pathlib.Path) -> None:
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_full_disk_is_one_error_and_older_checkpoints_survive(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        train_and_evaluate(tiny_config(), disk / "w", stop_after_step=20)
        _fill(disk)
        with pytest.raises((RunError, OSError)) as e:
            train_and_evaluate(tiny_config(), disk / "w")
        assert "full" in str(e.value) or getattr(e.value, "errno", None) == errno.ENOSPC
        (disk / "filler").unlink()
        train_and_evaluate(tiny_config(), disk / "w")  # step 20 intact: the run resumes, ends
        assert strict_rows(disk / "w")[-1]["step"] == 60
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_the_binary_says_a_full_disk_in_one_line(tmp_path):
    """The binary's stderr on a full disk is its one error line: Orbax's logs of the failed
    save and TensorStore's callbacks raising into its closed event loop stay quiet."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        proc = train_cli(disk / "w", *CLI_FLAGS, "--config.checkpoint.every_steps=50")
        for line in proc.stdout:
            if line.startswith("step 60:"):  # after the first checkpoint
                break
        _fill(disk)
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()  # a first prepare of the data may print progress above
        assert proc.returncode == 1 and "full" in lines[-1], err[-3000:]
        assert "Traceback" not in err and "RESOURCE_EXHAUSTED" not in err, err[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)])
