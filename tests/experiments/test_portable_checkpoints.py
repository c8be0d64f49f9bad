"""Checkpoints restore whatever device count saved them and whatever runs them (2 -> 1, 8 -> 1),
from relative and absolute workdirs: the README's train-then-sample flows as written.
(char_gru/char_rnn_shakespeare: test_configs_train; sample.py reads a GRU: test_sample.)"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dlkit.data import shared_data_dir
from dlkit.train.init_from import read_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"
SMOKE = str(EXP / "configs" / "char_smoke.py")


def binary(name, *args, cwd, check=True):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, str(EXP / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """20 KB of Tiny Shakespeare (or of pydoc's topics where the shared data is absent)."""
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    shared = shared_data_dir()
    source = shared / "tinyshakespeare" / "input.txt" if shared else None
    if source is not None and source.is_file():
        text = source.read_text(encoding="utf-8")
    else:
        from dlkit.data.text import pydoc_text

        text = pydoc_text()
    path.write_text(text[:20000], encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "config, reader",
    [
        ("char_lstm_shakespeare", "sample"),
        ("transformer_lm_shakespeare", "attention_maps"),
    ],
)
def test_shipped_char_configs_train_then_read_from_a_relative_workdir(
    tmp_path, corpus, config, reader
):
    """The README flow, relative --workdir, the config as it ships (2 CPU devices for the char
    RNNs) but 2 steps on a 20 KB excerpt; the reader runs on one device."""
    work = "workdirs/run"
    args = [f"--config={EXP / 'configs' / (config + '.py')}", f"--workdir={work}"]
    args += ["--config.num_train_steps=2", f"--config.data.path={corpus}"]
    out = binary("train.py", *args, "--config.progress_bar=False", cwd=tmp_path)
    assert "final: step=2" in out.stdout
    if reader == "sample":
        out = binary(
            "sample.py", f"--workdir={work}", "--prompt=ROMEO:", "--num_chars=20", cwd=tmp_path
        )
        assert out.stdout.startswith("ROMEO:") and len(out.stdout) == len("ROMEO:") + 21
    else:
        out = binary("attention_maps.py", f"--workdir={work}", "--layers=0,1", cwd=tmp_path)
        assert "layers [0, 1]" in out.stdout and (tmp_path / "attention.png").is_file()


def _train(cwd, work, devices, steps, *extra):
    args = [f"--config={SMOKE}", f"--workdir={work}", f"--config.parallel.cpu_devices={devices}"]
    return binary("train.py", *args, f"--config.num_train_steps={steps}", *extra, cwd=cwd)


def test_any_device_count_restores_on_any_other(tmp_path):
    """8 -> 1 for sampling, init_from and resume (resume 2 -> 1: the test above; the library's
    8 <-> 1 restore: tests/train/test_parallel.py)."""
    _train(tmp_path, "w8", 8, 2)
    # sampling runs on one device (1 -> 1: test_sample.py)
    out = binary("sample.py", "--workdir=w8", "--prompt=def ", "--num_chars=8", cwd=tmp_path)
    assert out.stdout.startswith("def ")
    # init_from on one device (this process) of the checkpoint saved on 8
    step8, tree8 = read_checkpoint(tmp_path / "w8")
    assert step8 == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(tree8))
    # resume 8 -> 1
    assert "Resuming from the checkpoint at step 2" in _train(tmp_path, "w8", 1, 3).stdout
