"""SIGKILL-and-rerun of experiments/train.py, shared by the resume tests of the binary: one run
uninterrupted, one killed once a checkpoint exists and rerun; both must end bitwise equal."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from dlkit.train import restore_latest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "experiments" / "train.py")]


def own_compile_env() -> dict:
    """The environment without the suite's shared compilation cache (tests/conftest.py): each
    process compiles its own program, as a user's rerun does, so recompiling is checked too."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    return {**env, "JAX_PLATFORMS": "cpu"}


def _run(work, args, env):
    cmd = [*TRAIN, f"--workdir={work}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def _kill_after_checkpoint(work, args, env, step: int, poll: float) -> None:
    """The binary started on `work`, SIGKILLed once a checkpoint >= `step` exists."""
    proc = subprocess.Popen(
        [*TRAIN, f"--workdir={work}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpts = work / "checkpoints"
        saved = ckpts.iterdir() if ckpts.is_dir() else ()
        if any(p.name.isdigit() and int(p.name) >= step for p in saved):
            break
        time.sleep(poll)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def killed_run_matches(tmp_path, args, *, kill_after: int, steps: int, poll: float = 0.05):
    """Runs `args` uninterrupted and killed-then-rerun; asserts both end at `steps` with equal
    state bits; returns (uninterrupted, rerun) CompletedProcess and the rerun's state."""
    env = own_compile_env()
    ref = _run(tmp_path / "ref", args, env)
    _kill_after_checkpoint(tmp_path / "killed", args, env, kill_after, poll)
    resumed = _run(tmp_path / "killed", args, env)
    assert "Resuming from the checkpoint at step" in resumed.stdout
    a = restore_latest(tmp_path / "ref", items=("state",))
    b = restore_latest(tmp_path / "killed", items=("state",))
    assert a["step"] == b["step"] == steps
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    return ref, resumed, b["state"]
