"""experiments/train.py end to end: a smoke run, one-line errors, and a oneDNN conv run resumed
bitwise after SIGKILL."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from faults.fault_utils import killed_run_matches

from dlkit.kernels import cpu
from dlkit.ops import conv

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


def test_sigkill_of_a_onednn_conv_run_resumes_bitwise(tmp_path):
    """cnn_smoke on 2 CPU devices, convs through oneDNN per device, an EMA of the weights: killed
    after a checkpoint, rerun, it ends bitwise equal to an uninterrupted run (params, optimizer
    state, EMA; each process compiles its own programs)."""
    x, w = np.zeros((8, 8, 8, 1), np.float32), np.zeros((3, 3, 1, 4), np.float32)
    if conv.choose_impl("conv2d", x, w, 1, "SAME", platform="cpu") != "onednn":
        pytest.skip(f"oneDNN convs unavailable: {cpu.why_unavailable()}")
    args = [
        f"--config={ROOT / 'experiments' / 'configs' / 'cnn_smoke.py'}",
        "--config.num_train_steps=600",
        "--config.checkpoint.every_steps=50",
        "--config.eval_every_steps=300",
        "--config.log_every_steps=300",
        "--config.parallel.cpu_devices=2",
        "--config.ema.decay=0.99",
    ]
    ref, _, state = killed_run_matches(tmp_path, args, kill_after=50, steps=600, poll=0.02)
    assert "convs: oneDNN" in ref.stdout, ref.stdout[:2000]
    assert "ema_params" in state
