"""Every user mistake at the door of experiments/train.py: one line on stderr, no traceback, exit
code 2 for usage errors and 1 for runtime failures, before any training."""

import os
import pathlib
import subprocess
import sys

import pytest

from dlkit import data
from dlkit.errors import ConfigError
from dlkit.train.config import default_config, validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "experiments" / "train.py")]
CHAR_SMOKE = str(ROOT / "experiments" / "configs" / "char_smoke.py")


def one_line_error(args, code, *, cwd=None):
    """Runs train.py with args; asserts exit `code` and a single 'error: ...' line; returns it."""
    env = {k: v for k, v in os.environ.items() if k != "DLKIT_VERBOSE"}
    out = subprocess.run(
        [*TRAIN, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    # stderr may hold the progress of a first-time dataset preparation, never a traceback
    assert "Traceback" not in out.stderr and lines[-1].startswith("error: "), out.stderr[-2000:]
    assert sum(line.startswith("error") for line in lines) == 1, out.stderr[-2000:]
    assert "final:" not in out.stdout
    return lines[-1]


@pytest.mark.parametrize(
    "override, words",
    [
        ("optimiser.name=adam", ["'optimiser'", "did you mean 'optimizer'"]),
        ("optimizer.nam=adam", ["'nam'", "did you mean 'name'"]),
        ("batch_size=abc", ["batch_size=abc", "invalid literal"]),
        ("batch_size=0", ["batch_size", ">= 1, got 0"]),
        ("eval_batch_size=0", ["eval_batch_size", ">= 1, got 0"]),
        ("num_train_steps=-1", ["num_train_steps", ">= 0, got -1"]),
        ("eval_every_steps=-2", ["eval_every_steps", ">= 0, got -2"]),
        ("step.grad_accum_steps=0", ["step.grad_accum_steps", ">= 1, got 0"]),
    ],
)
def test_bad_overrides_are_one_line_usage_errors(tmp_path, override, words):
    line = one_line_error([f"--workdir={tmp_path}", f"--config.{override}"], 2)
    for word in words:
        assert word in line, line
    assert not (tmp_path / "checkpoints").exists()


def test_missing_config_file_unknown_flag_and_stray_argument(tmp_path):
    line = one_line_error([f"--workdir={tmp_path}", "--config=experiments/configs/nope.py"], 2)
    assert "nope.py" in line and "not found" in line
    assert "workdir" in one_line_error([f"--workdirr={tmp_path}"], 2)
    assert "unexpected arguments" in one_line_error([f"--workdir={tmp_path}", "stray"], 2)
    line = one_line_error([f"--workdir={tmp_path}", f"--config={CHAR_SMOKE}:bogus"], 2)
    assert "lstm, gru, rnn" in line


def test_non_utf8_corpus_and_batch_larger_than_dataset(tmp_path):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    text = [f"--config={CHAR_SMOKE}", "--config.data.name=text_file"]
    line = one_line_error([*text, f"--config.data.path={binary}", f"--workdir={tmp_path}/a"], 2)
    assert "not UTF-8" in line and "corpus.bin" in line
    line = one_line_error([f"--workdir={tmp_path}/b", "--config.batch_size=5000"], 2)
    assert "batch_size 5000 exceeds the 1437 training examples" in line


def test_unwritable_workdir_is_refused_at_the_door(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    line = one_line_error([f"--workdir={blocker}/run"], 1)
    assert "cannot write to workdir" in line
    if os.geteuid() != 0:  # root writes through permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        line = one_line_error([f"--workdir={locked}/run"], 1)
        assert "permission denied" in line


def test_verbose_shows_the_traceback(tmp_path):
    out = subprocess.run(
        [*TRAIN, f"--workdir={tmp_path}", "--config.batch_size=0", "--verbose"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.parametrize(
    "key, value",
    [
        ("batch_size", 0),
        ("eval_batch_size", -1),
        ("num_train_steps", -1),
        ("log_every_steps", -1),
        ("checkpoint.every_steps", -1),
        ("checkpoint.max_to_keep", 0),
        ("parallel.steps_per_call", 0),
        ("step.grad_accum_steps", 0),
        ("optimizer.learning_rate", float("nan")),
        ("data.seq_len", 0),
    ],
)
def test_validate_names_the_setting(key, value):
    config = default_config()
    *sections, leaf = key.split(".")
    node = config
    for name in sections:
        node = node[name]
    node[leaf] = value
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        validate(config)


def test_validate_accepts_the_shipped_configs():
    import importlib.util

    for path in sorted((ROOT / "experiments" / "configs").glob("*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        validate(module.get_config())


def test_data_load_without_a_name_lists_the_choices():
    with pytest.raises(ConfigError, match="needs a 'name'; choose one of: .*digits"):
        data.load({})
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        data.load({"name": "digts"})
