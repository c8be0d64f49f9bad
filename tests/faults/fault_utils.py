"""Shared pieces of the fault-injection tests: a tiny config, runs and the checks of each trial."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from dlkit.train import restore_latest
from dlkit.train.config import default_config
from dlkit.train.metrics import read_tensorboard
from dlkit.train.runner import Runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ROOT / "experiments" / "train.py"


def tiny_config(**over):
    """mlp_digits-like, small: 60 steps, logs every 7, eval at 30, checkpoints every 20."""
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (16,)
    c.model.dropout_rate = 0.1
    c.data.name = "digits"
    c.batch_size = 32
    c.num_train_steps = 60
    c.log_every_steps = 7
    c.eval_every_steps = 30
    c.checkpoint.every_steps = 20
    c.progress_bar = False
    for k, v in over.items():
        c[k] = v
    return c


def signal_at(monkeypatch, at_call: int, signals) -> None:
    """Runner.train raises `signals` (in order) right after its `at_call`-th dispatch."""
    real, calls = Runner.train, [0]

    def train(self, state, batches):
        out = real(self, state, batches)
        calls[0] += 1
        if calls[0] == at_call:
            for s in signals:
                signal.raise_signal(s)
        return out

    monkeypatch.setattr(Runner, train.__name__, train)


def strict_rows(workdir) -> list[dict]:
    """metrics.jsonl rows; asserts strict JSON (no NaN/Infinity) and no repeated (step, key)."""
    rows, path = [], pathlib.Path(workdir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        rows.append(json.loads(line, parse_constant=_reject))
    seen = set()
    for row in rows:
        for k in row:
            assert (row["step"], k) not in seen or k == "step", f"step {row['step']} {k} repeated"
            seen.add((row["step"], k))
    return rows


def _reject(name):
    raise AssertionError(f"metrics.jsonl holds a bare {name}: not RFC 8259 JSON")


def tb_unique(workdir) -> list[tuple]:
    """TensorBoard scalars; asserts that no (step, tag) appears twice."""
    events = read_tensorboard(workdir)
    keys = [(s, t) for s, t, _ in events]
    assert len(keys) == len(set(keys)), "a TensorBoard step was written twice"
    return events


def without_speed(rows):
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in rows]


def assert_same_state(a, b) -> dict:
    """The latest checkpoints of runs a and b: same step, same state bits; returns b's."""
    ta, tb = restore_latest(a, items=("state",)), restore_latest(b, items=("state",))
    assert ta["step"] == tb["step"]
    la, lb = jax.tree.leaves(ta["state"]), jax.tree.leaves(tb["state"])
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    return tb


def assert_same_run(a, b) -> None:
    """Same final state (bitwise), same metrics.jsonl (minus speed), same TensorBoard scalars."""
    assert_same_state(a, b)
    assert without_speed(strict_rows(a)) == without_speed(strict_rows(b))
    drop = lambda ev: sorted(e for e in ev if e[1] != "steps_per_sec")  # noqa: E731
    assert drop(tb_unique(a)) == drop(tb_unique(b))


def train_cli(workdir, *flags, driver=None, **popen):
    """experiments/train.py on mlp_digits, as a subprocess (started, not waited for); `driver`:
    a script that patches the library, then runs the binary named by its first argument."""
    run = [str(driver), str(TRAIN)] if driver else [str(TRAIN)]
    cmd = [sys.executable, *run, f"--workdir={workdir}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def own_compile_env() -> dict:
    """The environment without the suite's shared compilation cache (tests/conftest.py): each
    process compiles its own program, as a user's rerun does, so recompiling is checked too."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    return {**env, "JAX_PLATFORMS": "cpu"}


def _kill_after_checkpoint(work, args, env, step: int, poll: float) -> None:
    """experiments/train.py started on `work`, SIGKILLed once a checkpoint >= `step` exists."""
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), f"--workdir={work}", *args],
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
    """experiments/train.py with `args` run uninterrupted, and killed (SIGKILL) once a checkpoint
    >= kill_after exists then rerun; asserts both end at `steps` with equal state bits; returns
    (uninterrupted, rerun) CompletedProcess and the rerun's state."""
    env = own_compile_env()
    ref = _train_done(tmp_path / "ref", args, env)
    _kill_after_checkpoint(tmp_path / "killed", args, env, kill_after, poll)
    rerun = _train_done(tmp_path / "killed", args, env)
    assert "Resuming from the checkpoint at step" in rerun.stdout
    state = assert_same_state(tmp_path / "ref", tmp_path / "killed")
    assert state["step"] == steps
    return ref, rerun, state["state"]


def _train_done(work, args, env) -> subprocess.CompletedProcess:
    """experiments/train.py on `work` to its end; asserts it exits 0."""
    cmd = [sys.executable, str(TRAIN), f"--workdir={work}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


CLI_FLAGS = (
    "--config=" + str(ROOT / "experiments" / "configs" / "mlp_digits.py"),
    "--config.num_train_steps=300",
    "--config.log_every_steps=10",
    "--config.eval_every_steps=150",
    "--config.checkpoint.every_steps=100",
    "--config.progress_bar=False",
)


def poison_batch(monkeypatch, at: int) -> None:
    """data.train_iterator's `at`-th batch (1-based) gets NaN inputs (a non-finite step)."""
    from dlkit import data

    real = data.train_iterator

    class Poisoned:
        def __init__(self, it):
            self.it, self.n = it, 0

        def __next__(self):
            self.n += 1
            b = next(self.it)
            return {**b, "inputs": np.where(self.n == at, np.nan, b["inputs"])}

        def get_state(self):
            return self.it.get_state()

        def set_state(self, s):
            self.it.set_state(s)

    monkeypatch.setattr(data, "train_iterator", lambda *a, **k: Poisoned(real(*a, **k)))
