"""dlkit.ops.dropout (16 random bits per element) and dlkit.nn.Dropout (flax's layer over it)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.errors import InvalidRngError

from dlkit.nn import Dropout
from dlkit.ops import dropout
from dlkit.ops.dropout import keep_threshold


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keeps_one_minus_rate_and_preserves_the_mean(rate):
    x = jnp.ones((1000, 1001))
    y = np.asarray(dropout(x, rate, jax.random.key(0)))
    kept = y > 0
    assert abs(kept.mean() - (1 - rate)) < 5e-3  # ~17 standard deviations at 1e6 elements
    t = keep_threshold(rate)
    assert abs(t / 2**16 - (1 - rate)) <= 2**-17
    np.testing.assert_array_equal(y[kept], np.float32(2**16 / t))  # E[out] = x exactly
    assert abs(y.mean() - 1.0) < 1e-2


def test_masks_follow_the_key_and_broadcast_dims():
    x = jnp.ones((4, 6, 8))
    a, b = dropout(x, 0.5, jax.random.key(1)), dropout(x, 0.5, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(dropout(x, 0.5, jax.random.key(2))))
    shared = np.asarray(dropout(x, 0.5, jax.random.key(3), broadcast_dims=(1, -1)))
    assert (shared == shared[:, :1, :1]).all() and 0 < (shared[:, 0, 0] > 0).sum() < 4


def test_edges_and_bad_rates():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.0, jax.random.key(0))), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(dropout(x, 1.0, jax.random.key(0))), 0.0)
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\], got 1.5"):
        dropout(x, 1.5, jax.random.key(0))


def test_module_matches_flax_contract():
    x = jnp.ones((3, 5))
    layer = Dropout(0.5)
    assert isinstance(layer, nn.Dropout)
    np.testing.assert_array_equal(np.asarray(layer.apply({}, x, deterministic=True)), 1.0)
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
    with pytest.raises(InvalidRngError):
        layer.apply({}, x, deterministic=False)  # no "dropout" rng
