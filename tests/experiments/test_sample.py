"""experiments/sample.py: restores a trained char model and its tokenizer and writes text."""

import pathlib
import subprocess
import sys

import pytest

from dlkit.extras.configs import get_config
from dlkit.nn import sampling
from dlkit.train import train_and_evaluate
from dlkit.train.load import load_language_model as load_from_workdir

ROOT = pathlib.Path(__file__).resolve().parents[2]


def smoke_config():
    c = get_config(ROOT / "experiments" / "configs" / "char_smoke.py", "gru")
    c.num_train_steps = 10
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("char_gru")
    metrics = train_and_evaluate(smoke_config(), path)
    assert metrics["step"] == 10
    return path


def test_load_and_generate_from_workdir(workdir):
    model, variables, tok = load_from_workdir(workdir)
    assert tok.kind == "char" and model.num_classes == tok.vocab_size
    a = sampling.generate_text(model, variables, tok, "class ", 30, seed=3, temperature=1.0)
    b = sampling.generate_text(model, variables, tok, "class ", 30, seed=3, temperature=1.0)
    c = sampling.generate_text(model, variables, tok, "class ", 30, seed=4, temperature=1.0)
    assert a == b != c
    assert a.startswith("class ") and len(a) == len("class ") + 30
    assert set(a) <= set(tok.vocab)


def test_sample_binary(workdir, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "sample.py"), f"--workdir={workdir}"]
    out = subprocess.run(
        [*cmd, "--prompt=def ", "--num_chars=25", "--temperature=0", "--top_k=3", "--seed=1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    model, variables, tok = load_from_workdir(workdir)
    want = sampling.generate_text(model, variables, tok, "def ", 25, temperature=0.0)
    assert out == want + "\n"  # greedy: what the library gives
    bad = subprocess.run(
        [*cmd[:2], f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode != 0 and "error: no checkpoints in" in bad.stderr
    assert "Traceback" not in bad.stderr
