"""Preemption: a signal saves the step in flight, raises Preempted (exit 75), loses no step, and
the rerun ends bitwise equal to an uninterrupted run; handlers are the run's only while it runs."""

import signal

import pytest
from fault_utils import (
    CLI_FLAGS,
    ROOT,
    assert_same_run,
    signal_at,
    strict_rows,
    tiny_config,
    train_cli,
)

from dlkit.errors import Preempted
from dlkit.train import Checkpointer, train_and_evaluate


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference")
    train_and_evaluate(tiny_config(), path)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_saves_that_step_and_rerun_is_exact(tmp_path, monkeypatch, reference, sig):
    signal_at(monkeypatch, 23, [sig])  # mid log window, between checkpoints 20 and 40
    with pytest.raises(Preempted, match=r"^Preempted at step 23; checkpoint saved; rerun the same"):
        train_and_evaluate(tiny_config(), tmp_path)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_step() == 23  # zero steps lost
    ckpt.close()
    monkeypatch.undo()
    train_and_evaluate(tiny_config(), tmp_path)
    assert_same_run(reference, tmp_path)


def test_handlers_are_restored_and_a_host_handler_survives(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    host_int = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `cmd &`
    try:
        train_and_evaluate(tiny_config(num_train_steps=3), tmp_path)
        assert signal.getsignal(signal.SIGINT) is host_int
        signal.raise_signal(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_second_signal_aborts_at_once(tmp_path, monkeypatch):
    signal_at(monkeypatch, 5, [signal.SIGINT, signal.SIGINT])
    host_int = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `cmd &`
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(tiny_config(), tmp_path)
    assert signal.getsignal(signal.SIGINT) is host_int


def test_unknown_signal_name_is_a_config_error(tmp_path):
    from dlkit.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'SIGTERM'"):
        train_and_evaluate(tiny_config(preemption_signals=("SIGTREM",)), tmp_path)


def test_sigterm_on_the_binary_exits_75_and_the_rerun_continues(tmp_path):
    proc = train_cli(tmp_path, *CLI_FLAGS)
    for line in proc.stdout:  # the first log line: training is under way
        if line.startswith("step 10:"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Preempted at step" in lines[0], err[-2000:]
    step = int(lines[0].split("Preempted at step ")[1].split(";")[0])
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_step() == step  # the step in flight was saved
    ckpt.close()
    rerun = train_cli(tmp_path, *CLI_FLAGS)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert f"Resuming from the checkpoint at step {step}" in out
    assert strict_rows(tmp_path)[-1]["step"] == 300


# experiments/train.py in-process, with Ctrl-C after the 2nd dispatch and a second Ctrl-C (the
# shell's "stop now") while the loop waits for the save of that step; it lands inside that wait
# whatever the load (the sleep catches it when the save was already committed)
_TWICE = """
import os, runpy, signal, sys, threading, time
from dlkit.train.checkpoint import Checkpointer
from dlkit.train.runner import Runner
real_train, real_wait, calls, fired = Runner.train, Checkpointer.wait, [0], []
def train(self, state, batches):
    out = real_train(self, state, batches)
    calls[0] += 1
    if calls[0] == 2:
        signal.raise_signal(signal.SIGINT)
    return out
def wait(self):
    if calls[0] == 2 and not fired:
        fired.append(1)
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
        real_wait(self)
        time.sleep(120)
    return real_wait(self)
Runner.train, Checkpointer.wait = train, wait
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
BIG = (  # 2 x 2048 hidden: an 8.6M-parameter Adam state, a save that takes a while
    "--config=" + str(ROOT / "experiments" / "configs" / "mlp_digits.py"),
    "--config.model.hidden_sizes=(2048,2048)",
    "--config.num_train_steps=4",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=4",
    "--config.checkpoint.every_steps=2",
    "--config.progress_bar=False",
)


def test_ctrl_c_twice_during_the_save_is_one_line_and_the_rerun_is_exact(tmp_path):
    driver = tmp_path / "twice.py"
    driver.write_text(_TWICE)
    reference, run = tmp_path / "reference", tmp_path / "run"
    ref = train_cli(reference, *BIG)
    assert ref.communicate(timeout=600) and ref.returncode == 0
    proc = train_cli(run, *BIG, driver=driver)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    assert out.splitlines()[-1].startswith("step 2:"), out[-2000:]  # the last progress line
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert len(err.strip().splitlines()) <= 3, err[-3000:]  # no Orbax thread tracebacks
    rerun = train_cli(run, *BIG)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert len(err.strip().splitlines()) <= 1, err  # at most: the cut save was set aside
    assert_same_run(reference, run)
