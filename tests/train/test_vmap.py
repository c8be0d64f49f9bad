"""vmap: per-example gradients against a loop, DP-SGD clipping and noise, ensembles vs twins."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerances import rtol_for

from dlkit import models
from dlkit.errors import ConfigError
from dlkit.train import create_train_state, make_optimizer, objectives, train_and_evaluate
from dlkit.train import vmap as V
from dlkit.train.config import default_config
from dlkit.train.ensemble import ensemble_state
from dlkit.train.options import RunOptions
from dlkit.train.runner import Runner
from dlkit.train.step import train_step


def mlp_state(seed=0, lr=1e-2, dropout=0.0):
    c = default_config()
    c.optimizer.learning_rate = lr
    model = models.get("mlp", num_classes=10, hidden_sizes=(16,), dropout_rate=dropout)
    return create_train_state(
        model, make_optimizer(c.optimizer, 100), jnp.zeros((1, 8, 8, 1)), seed
    )


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "inputs": jnp.asarray(rng.random((n, 8, 8, 1), np.float32)),
        "targets": jnp.asarray(rng.integers(0, 10, n), jnp.int32),
    }


def mean_loss(state):
    def loss(params, b):
        logits = state.apply_fn({"params": params}, b["inputs"], train=False)
        return objectives.cross_entropy(logits, b)[0]

    return loss


def test_per_example_grads_match_a_loop_over_examples():
    state, b = mlp_state(), batch()
    loss = mean_loss(state)
    got = jax.jit(lambda p, b: V.per_example_grads(loss, p, b))(state.params, b)
    for i in range(len(b["targets"])):
        one = jax.grad(loss)(state.params, {k: v[i : i + 1] for k, v in b.items()})
        for g, want in zip(jax.tree.leaves(got), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(g[i], want, rtol=1e-5, atol=1e-7)
    # the mean of per-example grads is the batch gradient
    full = jax.grad(loss)(state.params, b)
    for g, want in zip(jax.tree.leaves(got), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(g.mean(0), want, rtol=1e-5, atol=1e-7)


def test_clipping_and_noise():
    state, b = mlp_state(), batch()
    grads = V.per_example_grads(mean_loss(state), state.params, b)
    norms = V.per_example_norms(grads)
    assert float(norms.min()) > 0.05  # the clip below is active for every example
    clipped, _ = V.clip_per_example(grads, 0.05)
    np.testing.assert_allclose(V.per_example_norms(clipped), 0.05, rtol=1e-5)
    summed = V.clipped_sum(grads, 0.05)
    noised = V.dp_noised_sum(grads, 0.05, 2.0, jax.random.PRNGKey(3))
    noise = np.concatenate(
        [
            np.ravel(n - s)
            for n, s in zip(jax.tree.leaves(noised), jax.tree.leaves(summed), strict=True)
        ]
    )
    assert noise.size > 1000
    np.testing.assert_allclose(noise.std(), 2.0 * 0.05, rtol=0.1)  # sigma * C
    assert abs(noise.mean()) < 0.01


def dp_config(clip, noise):
    c = default_config()
    c.batch_size = 8
    c.dp.enabled, c.dp.clip_norm, c.dp.noise_multiplier = True, clip, noise
    return c


def test_dp_step_is_clipped_mean_plus_noise():
    b = batch()
    step = jax.jit(train_step, static_argnames=("objective", "options"))
    plain, _ = step(mlp_state(), b, objective=objectives.cross_entropy)
    # huge clip norm, no noise: DP-SGD is the plain step
    loose = _step_options(dp_config(1e6, 0.0))
    same, _ = step(mlp_state(), b, objective=objectives.cross_entropy, options=loose)
    for x, y in zip(jax.tree.leaves(same.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # tight clip, no noise: SGD on the mean of clipped per-example grads
    state = mlp_state()
    tx = optax.sgd(1.0)
    sgd = state.replace(tx=tx, opt_state=tx.init(state.params))
    tight = _step_options(dp_config(0.05, 0.0))
    new, _ = step(sgd, b, objective=objectives.cross_entropy, options=tight)
    grads = V.per_example_grads(mean_loss(state), state.params, b)
    want = jax.tree.map(lambda p, g: p - g / 8, state.params, V.clipped_sum(grads, 0.05))
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # noise: a different step, reproducible from (rng, step)
    noisy = _step_options(dp_config(0.05, 1.0))
    n1, _ = step(sgd, b, objective=objectives.cross_entropy, options=noisy)
    n2, _ = step(sgd, b, objective=objectives.cross_entropy, options=noisy)
    diff = jax.tree.map(lambda x, y: np.asarray(x - y), n1.params, new.params)
    assert max(float(np.abs(d).max()) for d in jax.tree.leaves(diff)) > 1e-3
    for x, y in zip(jax.tree.leaves(n1.params), jax.tree.leaves(n2.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_dp_refuses_accumulation():
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        c = dp_config(1.0, 1.0)
        c.grad_accum_steps = 2
        _step_options(c)


def test_ensemble_members_equal_separately_trained_twins():
    c = default_config()
    c.batch_size = 8
    c.parallel.kind = "none"
    c.optimizer.learning_rate = 1e-2
    k = 2
    c.ensemble_size = k
    objective = objectives.get("cross_entropy")
    create = lambda seed: mlp_state(seed=seed, dropout=0.2)  # noqa: E731
    runner = Runner.create(RunOptions.from_config(c), objective)
    ens = runner.place(ensemble_state(k, c.seed, create))
    data = [batch(seed=i) for i in range(2)]
    for b in data:
        ens, sums = runner.train(ens, [jax.device_get(b)])
    assert sums["loss"].shape == ()
    single = copy.deepcopy(c)
    single.ensemble_size = 1
    one = Runner.create(RunOptions.from_config(single), objective)
    for m in range(k):
        twin = one.place(mlp_state(seed=c.seed + m, dropout=0.2))
        for b in data:
            twin, _ = one.train(twin, [jax.device_get(b)])
        member = V.member(ens.checkpoint_tree(), m)
        for x, y in zip(
            jax.tree.leaves(member), jax.tree.leaves(twin.checkpoint_tree()), strict=True
        ):
            tol = rtol_for(np.float32, len(data) * c.batch_size)  # vmapped vs plain steps
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol * 1e-1)
    p0, p1 = (V.member(ens.params, i) for i in (0, 1))
    assert not np.allclose(jax.tree.leaves(p0)[0], jax.tree.leaves(p1)[0])  # different seeds


def test_ensemble_config_trains_and_evaluates(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "experiments/configs/mlp_digits_ensemble.py"
    spec = importlib.util.spec_from_file_location("ens_cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.num_train_steps, c.log_every_steps, c.eval_every_steps = 4, 2, 4
    c.checkpoint_every_steps, c.progress_bar, c.ensemble_size = 4, False, 2
    metrics = train_and_evaluate(c, tmp_path)
    assert metrics["step"] == 4 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    from dlkit.train import restore_latest

    state = restore_latest(tmp_path, items=("state",))["state"]
    assert all(x.shape[0] == c.ensemble_size for x in jax.tree.leaves(state["params"]))


def _step_options(config):
    """The train step's static options of a config, as the loop makes them."""
    from dlkit.train.options import RunOptions

    return RunOptions.from_config(config).step.to_step_options()
