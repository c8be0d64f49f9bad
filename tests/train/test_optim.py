"""make_optimizer: every option of the optimizer section reaches the optax rule it names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlkit.train.build import make_optimizer
from dlkit.train.options import OptimizerOptions


def _updates(tx, steps=4):
    params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)}
    state = tx.init(params)
    out = []
    for i in range(steps):
        grads = {"w": jnp.cos(params["w"] * (i + 1))}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates["w"])
    return np.stack(jax.device_get(out))


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_betas_reach_the_rule(name):
    """b1/b2 set in the config change the update exactly as optax's own arguments do."""
    opts = OptimizerOptions(name=name, learning_rate=1e-2, b1=0.5, b2=0.9, weight_decay=0.1)
    extra = {"weight_decay": 0.1} if name == "adamw" else {}
    want = getattr(optax, name)(1e-2, b1=0.5, b2=0.9, **extra)
    np.testing.assert_allclose(_updates(make_optimizer(opts, 10)), _updates(want), rtol=1e-6)
    default = getattr(optax, name)(1e-2, **extra)
    assert not np.allclose(_updates(make_optimizer(opts, 10)), _updates(default), rtol=1e-3)
