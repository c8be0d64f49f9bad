"""Exact resume for the character LM: stopped and resumed equals one run, text windows included."""

import json

import jax
import numpy as np
import pytest

from dlkit.train import restore_latest, train_and_evaluate
from dlkit.train.config import default_config


def tiny_lm_config(name="char_lstm", dropout_rate=0.1):
    c = default_config()
    c.model.name = name
    c.model.hidden_size = 16
    c.model.num_layers = 2
    c.model.embed_dim = 8
    c.model.dropout_rate = dropout_rate  # per-step dropout keys must resume too
    c.data.name = "pydoc"
    c.data.seq_len = 16
    c.data.train_stride = 5
    c.data.eval_fraction = 0.005
    c.batch_size = 4
    c.eval_batch_size = 64
    c.num_train_steps = 24
    c.log_every_steps = 5
    c.eval_every_steps = 12
    c.checkpoint_every_steps = 8
    c.progress_bar = False
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.grad_clip_norm = 1.0
    return c


def lines(workdir):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in rows]


# char_gru without dropout: both layers in one ops.gru_stack wavefront, as its config trains
@pytest.mark.parametrize("name, dropout_rate", [("char_lstm", 0.1), ("char_gru", 0.0)])
def test_char_lm_resume_is_bitwise_exact(tmp_path, name, dropout_rate):
    full, split = tmp_path / "full", tmp_path / "split"
    config = lambda: tiny_lm_config(name, dropout_rate)  # noqa: E731
    m_full = train_and_evaluate(config(), full)
    train_and_evaluate(config(), split, stop_after_step=11)  # mid log window
    m_split = train_and_evaluate(config(), split)
    a = restore_latest(full, items=("state", "data", "assets"))
    b = restore_latest(split, items=("state", "data", "assets"))
    assert a["step"] == b["step"] == 24
    assert a["data"]["iterator"] == b["data"]["iterator"]  # the text-window position
    assert a["assets"] == b["assets"] and a["assets"]["tokenizer"]["kind"] == "char"
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert m_full == m_split
    assert lines(full) == lines(split)
    assert 0 < m_full["eval_loss"] < np.log(a["assets"]["tokenizer"]["vocab"].__len__())
    np.testing.assert_allclose(m_full["eval_bits"], m_full["eval_loss"] / np.log(2))
