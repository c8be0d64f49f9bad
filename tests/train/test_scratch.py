"""SGD and Adam from scratch equal optax's own, alone and through the shared train step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dlkit.nn import MLP
from dlkit.train import create_train_state, make_optimizer, objectives, scratch, train_step


def _params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"w": jax.random.normal(k1, (4, 3)), "b": {"x": jax.random.normal(k2, (3,))}}


def _run(tx, steps=6):
    """Updates params with a fresh pseudo-gradient each step; returns every params pytree."""
    params, out = _params(), []
    state = tx.init(params)
    for t in range(steps):
        grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)) + 0.1 * t, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def _assert_same(a_steps, b_steps):
    for a, b in zip(a_steps, b_steps, strict=True):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7)


SCHEDULE = optax.cosine_decay_schedule(0.1, 10)


@pytest.mark.parametrize(
    "kw", [{}, {"momentum": 0.9}, {"momentum": 0.5, "nesterov": True}], ids=["plain", "mom", "nest"]
)
@pytest.mark.parametrize("lr", [0.05, SCHEDULE], ids=["const", "cosine"])
def test_sgd_equals_optax(kw, lr):
    _assert_same(_run(scratch.sgd(lr, **kw)), _run(optax.sgd(lr, **kw)))


@pytest.mark.parametrize("lr", [1e-2, SCHEDULE], ids=["const", "cosine"])
@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_equals_optax(lr, b1, b2):
    _assert_same(_run(scratch.adam(lr, b1, b2)), _run(optax.adam(lr, b1, b2)))


def test_plain_sgd_is_params_minus_lr_grad():
    tx = scratch.sgd(0.5)
    params = {"w": jnp.array([1.0, 2.0])}
    updates, state = tx.update({"w": jnp.array([0.2, -0.4])}, tx.init(params), params)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], [0.9, 2.2])
    assert int(state.count) == 1 and state.trace is None


def test_adam_first_step_is_lr_sign_of_grad():
    # t = 1: m_hat = g, v_hat = g^2, so the update is -lr g / (|g| + eps) ~ -lr sign(g).
    tx = scratch.adam(0.1)
    params = {"w": jnp.zeros(3)}
    updates, state = tx.update({"w": jnp.array([3.0, -0.01, 2e3])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1, -0.1], rtol=1e-5)
    assert int(state.count) == 1


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="momentum"):
        scratch.sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="b1 and b2"):
        scratch.adam(0.1, b1=1.0)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_scratch_by_name_through_shared_train_step(name):
    model = MLP(num_classes=3, hidden_sizes=(8,))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 5))
    batch = {"inputs": x, "targets": jnp.arange(16, dtype=jnp.int32) % 3}
    objective = objectives.get("cross_entropy")
    finals = []
    for opt in (name, f"{name}_scratch"):
        cfg = ml_collections.ConfigDict({"name": opt, "learning_rate": 0.05, "schedule": "cosine"})
        state = create_train_state(model, make_optimizer(cfg, 20), x, seed=0)
        step = jax.jit(lambda s, b: train_step(s, b, objective=objective))
        for _ in range(5):
            state, _ = step(state, batch)
        finals.append(state.params)
    _assert_same([finals[1]], [finals[0]])
    assert not np.allclose(
        jax.tree.leaves(finals[0])[0],
        jax.tree.leaves(create_train_state(model, optax.sgd(0.1), x, seed=0).params)[0],
    )
