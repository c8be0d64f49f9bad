"""Exact resume: N steps in one run equal k steps, a stop, and a resumed run to N, bit for bit."""

import json

import jax
import numpy as np
import pytest

from dlkit.errors import ConfigError
from dlkit.train import restore_latest, train_and_evaluate
from dlkit.train.config import default_config


def tiny_config(**over):
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (16,)
    c.model.dropout_rate = 0.1  # per-step dropout keys must resume exactly too
    c.data.name = "digits"
    c.batch_size = 32
    c.num_train_steps = 60
    c.log_every_steps = 7  # not a divisor of the checkpoint interval: the metric window resumes
    c.eval_every_steps = 30
    c.checkpoint_every_steps = 20
    c.progress_bar = False
    c.optimizer.name = "adam"
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 10
    for k, v in over.items():
        c[k] = v
    return c


def final_tree(workdir):
    restored = restore_latest(workdir, items=("state",))
    return restored["step"], restored["state"]


def metric_lines(workdir):
    return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]


def strip_speed(lines):
    return [{k: v for k, v in ln.items() if k != "steps_per_sec"} for ln in lines]


def test_resume_is_bitwise_exact(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    m_full = train_and_evaluate(tiny_config(), full)
    train_and_evaluate(tiny_config(), split, stop_after_step=47)  # stop, mid log window
    m_split = train_and_evaluate(tiny_config(), split)  # same command resumes to 60

    (s1, a), (s2, b) = final_tree(full), final_tree(split)
    assert s1 == s2 == 60
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert m_full == m_split
    assert strip_speed(metric_lines(full)) == strip_speed(metric_lines(split))


def test_mismatched_workdir_is_refused_and_kept(tmp_path):
    train_and_evaluate(tiny_config(num_train_steps=20), tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    other = tiny_config()
    other.model.hidden_sizes = (8,)
    with pytest.raises(
        ConfigError, match=r"different run: model.hidden_sizes \(saved \[16\], now \[8\]\)"
    ):
        train_and_evaluate(other, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_longer_run_resumes_a_finished_one(tmp_path):
    train_and_evaluate(tiny_config(num_train_steps=20), tmp_path)
    metrics = train_and_evaluate(tiny_config(num_train_steps=40), tmp_path)
    assert metrics["step"] == 40
