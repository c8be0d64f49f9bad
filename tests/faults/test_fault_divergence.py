"""Non-finite steps: stop names the first bad step and the last finite checkpoint (none of them
non-finite); skip_step keeps the state for that step and counts it; the finite path is unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fault_utils import poison_batch, strict_rows, tb_unique, tiny_config

from dlkit import data
from dlkit.errors import ConfigError, Diverged
from dlkit.train import Checkpointer, objectives, restore_latest, train_and_evaluate
from dlkit.train.build import build_model, create_state
from dlkit.train.checkpoint import all_finite
from dlkit.train.step import train_step


def nan_at_13(tmp_path, monkeypatch, **over):
    """Raises Diverged: batch 13 holds a NaN; checkpoints every 5 steps."""
    poison_batch(monkeypatch, 13)
    config = tiny_config(num_train_steps=30, log_every_steps=20, checkpoint_every_steps=5, **over)
    with pytest.raises(Diverged) as e:
        train_and_evaluate(config, tmp_path)
    return str(e.value)


@pytest.mark.parametrize("per_call", [1, 4])
def test_stop_names_the_first_bad_step_and_keeps_only_finite_checkpoints(
    tmp_path, monkeypatch, per_call
):
    message = nan_at_13(tmp_path, monkeypatch, steps_per_call=per_call)
    assert message.startswith("non-finite loss or gradients at step 13; the last finite checkpoint")
    ckpt = Checkpointer(tmp_path / "checkpoints")
    steps = ckpt.all_steps()
    ckpt.close()
    assert steps == [10, 5] and "checkpoint is step 10" in message
    assert all_finite(restore_latest(tmp_path, items=("state",))["state"]["params"])
    strict_rows(tmp_path)
    tb_unique(tmp_path)


def _setup(config):
    dataset = data.load(config.data)
    state = create_state(config, dataset, build_model(config, dataset))
    batch = jax.tree.map(jnp.asarray, dataset.example_batch(32))
    return state, batch


def test_skip_step_keeps_the_state_and_the_finite_path_is_unchanged():
    config = tiny_config()
    state, batch = _setup(config)
    stop = _step_options(config)
    config.nonfinite = "skip_step"
    skip = _step_options(config)
    obj = objectives.get("cross_entropy")
    a, sa = jax.jit(lambda s, b: train_step(s, b, objective=obj, options=stop))(state, batch)
    b, sb = jax.jit(lambda s, b: train_step(s, b, objective=obj, options=skip))(state, batch)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # finite: same bits
    assert float(sa["nonfinite"]) == float(sb["nonfinite"]) == 0.0
    bad = {**batch, "inputs": batch["inputs"].at[0, 0].set(jnp.nan)}
    c, sc = jax.jit(lambda s, b: train_step(s, b, objective=obj, options=skip))(state, bad)
    assert float(sc["nonfinite"]) == 1.0 and int(c.step) == int(state.step) + 1
    for x, y in zip(jax.tree.leaves(c.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_skip_step_in_the_loop_counts_skips(tmp_path, monkeypatch):
    poison_batch(monkeypatch, 4)
    metrics = train_and_evaluate(tiny_config(num_train_steps=14, nonfinite="skip_step"), tmp_path)
    rows = [r for r in strict_rows(tmp_path) if "train_skipped_steps" in r]
    assert [r["train_skipped_steps"] for r in rows] == [1.0, 0.0]
    assert np.isfinite(metrics["eval_loss"])


def test_bad_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'skip_step'"):
        train_and_evaluate(tiny_config(nonfinite="skip"), tmp_path)


def test_metrics_are_strict_json_with_nan(tmp_path):
    from dlkit.train.metrics import MetricWriter

    w = MetricWriter(tmp_path)
    w.write(1, {"loss": float("nan"), "acc": float("inf"), "ok": 0.5}, echo=False)
    w.close()
    assert strict_rows(tmp_path) == [{"step": 1, "loss": None, "acc": None, "ok": 0.5}]
    assert tb_unique(tmp_path) == [(1, "ok", 0.5)]


def _step_options(config):
    """The train step's static options of a config, as the loop makes them."""
    from dlkit.train.options import RunOptions

    return RunOptions.from_config(config).step.to_step_options()
