"""experiments/train.py end to end: a smoke run, one-line errors, and resume after SIGKILL."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dlkit.kernels import cpu
from dlkit.ops import conv
from dlkit.train import restore_latest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "experiments" / "train.py")]
TINY = [
    "--config.model.hidden_sizes=(16,)",
    "--config.batch_size=16",
    "--config.progress_bar=False",
]


def run(*args, **kw):
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300, **kw)


def test_one_step_smoke(tmp_path):
    out = run(f"--workdir={tmp_path}", "--config.num_train_steps=1", *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final: step=1" in out.stdout
    assert out.stdout.count("dlkit platform:") == 1  # the host set-up and layout, once each
    assert out.stdout.count("dlkit CPU layout:") == 1
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "checkpoints" / "1").is_dir()
    assert list((tmp_path / "tensorboard").iterdir())


def test_cpu_devices_splits_the_host(tmp_path):
    """parallel.cpu_devices=2: the run is data parallel over two CPU devices."""
    two = "--config.parallel.cpu_devices=2"
    out = run(f"--workdir={tmp_path / 'ok'}", "--config.num_train_steps=2", two, *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final: step=2" in out.stdout
    odd = [*TINY, "--config.batch_size=3"]  # 3 rows cannot split over the 2 devices
    out = run(f"--workdir={tmp_path / 'odd'}", "--config.num_train_steps=2", two, *odd)
    assert out.returncode != 0
    assert "must divide evenly over 2 devices" in out.stderr.strip().splitlines()[-1]


def test_unknown_names_fail_with_one_line(tmp_path):
    for flag, word in [
        ("model.name=resnet9000", "model"),
        ("data.name=imagenet42", "dataset"),
        ("optimizer.name=adamant", "optimizer"),
    ]:
        out = run(f"--workdir={tmp_path / word}", f"--config.{flag}", *TINY)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: unknown {word} ") and "choose one of:" in last, last


def _killed_after_checkpoint(work, args, env, *, step: int, poll: float):
    """The binary started on `work`, SIGKILLed once a checkpoint >= `step` exists; `work`."""
    proc = subprocess.Popen(
        [*TRAIN, f"--workdir={work}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ckpts = work / "checkpoints"
        saved = ckpts.iterdir() if ckpts.is_dir() else ()
        if any(p.name.isdigit() and int(p.name) >= step for p in saved):
            break
        time.sleep(poll)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return work


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path):
    # Each process compiles its own program, as a user's rerun does: without the suite's shared
    # compilation cache (tests/conftest.py), so this also checks that recompiling is bitwise stable.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    args = [
        *TINY,
        "--config.num_train_steps=1200",  # ~1000 steps after the first checkpoint: time to kill
        "--config.checkpoint.every_steps=100",
        "--config.eval_every_steps=400",
        "--config.log_every_steps=400",
    ]
    ref = run(f"--workdir={tmp_path / 'ref'}", *args, env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]

    work = _killed_after_checkpoint(tmp_path / "killed", args, env, step=100, poll=0.05)

    resumed = run(f"--workdir={work}", *args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from the checkpoint at step" in resumed.stdout
    a = restore_latest(tmp_path / "ref", items=("state",))
    b = restore_latest(work, items=("state",))
    assert a["step"] == b["step"] == 1200
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigkill_of_a_onednn_conv_run_resumes_bitwise(tmp_path):
    """cnn_smoke on 2 CPU devices, convs through oneDNN per device: killed after a checkpoint,
    rerun, it ends bitwise equal to an uninterrupted run."""
    x, w = np.zeros((8, 8, 8, 1), np.float32), np.zeros((3, 3, 1, 4), np.float32)
    if conv.choose_impl("conv2d", x, w, 1, "SAME", platform="cpu") != "onednn":
        pytest.skip(f"oneDNN convs unavailable: {cpu.why_unavailable()}")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    args = [
        f"--config={ROOT / 'experiments' / 'configs' / 'cnn_smoke.py'}",
        "--config.num_train_steps=600",
        "--config.checkpoint.every_steps=50",
        "--config.eval_every_steps=300",
        "--config.log_every_steps=300",
        "--config.parallel.cpu_devices=2",
    ]
    ref = run(f"--workdir={tmp_path / 'ref'}", *args, env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert "convs: oneDNN" in ref.stdout, ref.stdout[:2000]

    work = _killed_after_checkpoint(tmp_path / "killed", args, env, step=50, poll=0.02)

    resumed = run(f"--workdir={work}", *args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from the checkpoint at step" in resumed.stdout
    a = restore_latest(tmp_path / "ref", items=("state",))
    b = restore_latest(work, items=("state",))
    assert a["step"] == b["step"] == 600
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
