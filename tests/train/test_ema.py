"""EMA of the weights (config.ema.decay): its math against numpy, eval_ema_* metrics, train.load
(ema=True), skipped steps, frozen params, fused steps, ensembles, and resume (bitwise after
SIGKILL; a changed decay is another run's)."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerances import rtol_for

from dlkit import data
from dlkit.errors import ConfigError
from dlkit.extras.configs import get_config
from dlkit.train import (
    build_model,
    create_state,
    create_train_state,
    ema,
    init_from,
    load,
    objectives,
    restore_latest,
    train_and_evaluate,
)
from dlkit.train.metrics import read_lines, read_tensorboard
from dlkit.train.options import RunOptions, config_differences
from dlkit.train.runner import Runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
MLP_DIGITS = ROOT / "experiments" / "configs" / "mlp_digits.py"


def mlp_digits(**over):
    """experiments/configs/mlp_digits.py, shrunk: 12 steps, eval at 6 and 12, EMA 0.99."""
    c = get_config(MLP_DIGITS)
    c.num_train_steps, c.log_every_steps, c.eval_every_steps = 12, 6, 6
    c.checkpoint.every_steps, c.batch_size, c.progress_bar = 6, 32, False
    c.ema.decay = 0.99
    for k, v in over.items():
        section, _, key = k.rpartition("__")
        (c[section] if section else c)[key] = v
    return c


def host(tree):
    return jax.tree.map(lambda x: np.array(x), jax.device_get(tree))


def stepper(c):
    """(state, runner, dataset) of a config: the loop's own pieces, on one device."""
    options = RunOptions.from_config(c)
    dataset = data.load(options.data)
    runner = Runner.create(options, objectives.get(options.loss), devices=1)
    state = runner.place(create_state(options, dataset, build_model(options, dataset)))
    return state, runner, dataset


@pytest.mark.parametrize("accum", [1, 2])
def test_ema_math_matches_numpy(accum):
    decay = 0.9  # with accumulation: one EMA update per optimizer step, not per micro-batch
    state, runner, dataset = stepper(mlp_digits(ema__decay=decay, step__grad_accum_steps=accum))
    it = data.train_iterator(dataset, 32, 0)
    params = [host(state.params)]
    assert all(e.dtype == np.float32 for e in jax.tree.leaves(state.ema_params))
    jax.tree.map(np.testing.assert_array_equal, host(state.ema_params), params[0])  # no debias
    for _ in range(4):
        state, _ = runner.train(state, [next(it)])
        params.append(host(state.params))
    want = params[0]
    for p in params[1:]:
        want = jax.tree.map(lambda e, q: e + np.float32(1 - decay) * (q - e), want, p)
    got = host(state.ema_params)
    tol = rtol_for(np.float32, 4 * 3)  # 4 updates of 3 roundings each
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)
    assert not np.allclose(got["head"]["kernel"], params[-1]["head"]["kernel"])


def test_decay_zero_keeps_the_state_as_without_ema():
    state, _, _ = stepper(mlp_digits(ema__decay=0.0))
    assert state.ema_params is None
    assert set(state.checkpoint_tree()) == {"step", "params", "opt_state", "model_state", "rng"}


def test_a_skipped_step_leaves_the_ema_unchanged():
    c = mlp_digits(ema__decay=0.9, step__nonfinite="skip_step")
    state, runner, dataset = stepper(c)
    batch = next(data.train_iterator(dataset, 32, 0))
    state, _ = runner.train(state, [batch])
    before = host(state.checkpoint_tree())
    state, sums = runner.train(state, [{**batch, "inputs": np.full_like(batch["inputs"], np.nan)}])
    assert float(sums["nonfinite"]) == 1.0
    after = host(state.checkpoint_tree())
    for k in ("params", "ema_params", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, after[k], before[k])


def test_frozen_params_stay_bit_equal_in_the_ema():
    c = mlp_digits(ema__decay=0.9, transfer__freeze=("hidden_0/.*",))
    state, runner, dataset = stepper(c)
    it = data.train_iterator(dataset, 32, 0)
    for _ in range(3):
        state, _ = runner.train(state, [next(it)])
    params, ema = host(state.params), host(state.ema_params)
    jax.tree.map(np.testing.assert_array_equal, ema["hidden_0"], params["hidden_0"])
    assert not np.array_equal(ema["head"]["kernel"], params["head"]["kernel"])


def test_fused_steps_update_the_ema_every_step():
    single, runner, dataset = stepper(mlp_digits())
    fused = runner.place(jax.tree.map(np.array, single))  # a copy: train donates its state
    it = data.train_iterator(dataset, 32, 0)
    batches = [next(it) for _ in range(3)]
    for b in batches:
        single, _ = runner.train(single, [b])
    fused, _ = runner.train(fused, batches)  # one lax.scan over 3 steps
    tol = rtol_for(np.float32, 3 * 32)
    for x, y in zip(jax.tree.leaves(host(fused)), jax.tree.leaves(host(single)), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * 1e-1)


def test_run_logs_eval_ema_and_load_returns_the_ema(tmp_path):
    metrics = train_and_evaluate(mlp_digits(), tmp_path / "ema")
    assert {"eval_ema_loss", "eval_ema_accuracy"} <= set(metrics)
    rows = [r for r in data_rows(tmp_path / "ema") if "eval_ema_loss" in r]
    assert [r["step"] for r in rows] == [6, 12] and all("eval_loss" in r for r in rows)
    assert any("eval_ema_accuracy" in t for t in tags(tmp_path / "ema"))
    saved = restore_latest(tmp_path / "ema", items=("state",))["state"]
    run, raw = load(tmp_path / "ema", ema=True), load(tmp_path / "ema")
    jax.tree.map(np.testing.assert_array_equal, host(run.variables["params"]), saved["ema_params"])
    jax.tree.map(np.testing.assert_array_equal, host(raw.variables["params"]), saved["params"])
    x = data.load(RunOptions.from_config(mlp_digits()).data).example_batch(5)["inputs"]
    assert run.model.apply(run.variables, x, train=False).shape == (5, 10)

    train_and_evaluate(mlp_digits(ema__decay=0.0, num_train_steps=2), tmp_path / "raw")
    with pytest.raises(ConfigError, match=r"kept no EMA .*ema\.decay was 0.*without ema=True"):
        load(tmp_path / "raw", ema=True)

    c = mlp_digits(transfer__init_from=str(tmp_path / "raw"))  # the EMA starts at loaded params
    options = RunOptions.from_config(c)
    dataset = data.load(options.data)
    fresh = create_state(options, dataset, build_model(options, dataset))
    state = init_from.init_from(fresh, options.transfer)
    jax.tree.map(np.testing.assert_array_equal, host(state.ema_params), host(state.params))
    assert not np.array_equal(
        host(fresh.ema_params["head"]["kernel"]), host(state.params)["head"]["kernel"]
    )


class Bf16(nn.Module):
    """A layer with bfloat16 params."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3, param_dtype=jnp.bfloat16)(x)


def test_ema_is_float32_and_evaluates_in_the_params_dtype():
    state = ema.start(create_train_state(Bf16(), optax.sgd(0.1), jnp.ones((1, 4)), 0), 0.9)
    assert {x.dtype for x in jax.tree.leaves(state.ema_params)} == {jnp.dtype(jnp.float32)}
    viewed = ema.view(state)
    assert {x.dtype for x in jax.tree.leaves(viewed.params)} == {jnp.dtype(jnp.bfloat16)}
    assert ema.start(state, 0.0) is state


def data_rows(workdir):
    return read_lines(pathlib.Path(workdir) / "metrics.jsonl")


def tags(workdir):
    return {tag for _, tag, _ in read_tensorboard(workdir)}


def test_ensemble_members_keep_their_own_ema(tmp_path):
    c = mlp_digits(parallel__ensemble_size=2, num_train_steps=4, eval_every_steps=4)
    metrics = train_and_evaluate(c, tmp_path)
    assert "eval_ema_loss" in metrics
    state = restore_latest(tmp_path, items=("state",))["state"]
    kernel = state["ema_params"]["head"]["kernel"]
    assert kernel.shape[0] == 2 and not np.array_equal(kernel[0], kernel[1])


def test_decay_is_checked_and_a_changed_decay_is_another_run():
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"ema\.decay must be"):
            RunOptions.from_config(mlp_digits(ema__decay=bad))
    with pytest.raises(ConfigError, match=r"did you mean ema\.decay"):
        RunOptions.from_config({**mlp_digits().to_dict(), "ema": {"decy": 0.9}})
    saved, now = mlp_digits().to_dict(), mlp_digits(ema__decay=0.999).to_dict()
    assert config_differences(saved, now) == ["ema.decay (saved 0.99, now 0.999)"]
    old = {k: v for k, v in mlp_digits(ema__decay=0.0).to_dict().items() if k != "ema"}
    assert config_differences(old, mlp_digits(ema__decay=0.0)) == []  # checkpoints before EMA


# SIGKILL then rerun with the EMA on, bitwise: tests/experiments/test_train_binary.py (the
# oneDNN conv net on 2 devices, whose state holds params, optimizer state and the EMA).
