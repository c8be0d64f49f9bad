"""dlkit.ops.tanh (float32 rational form, custom JVP) against jnp.tanh and float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import eps, rtol_for

from dlkit.ops import tanh


def _grid() -> np.ndarray:
    """Dense float32 points over [-20, 20] plus a log sweep down to 1e-30 (normal numbers)."""
    lin = np.linspace(-20, 20, 400_001, dtype=np.float32)
    tiny = np.logspace(-30, 1.3, 20_000).astype(np.float32)
    return np.concatenate([lin, tiny, -tiny, np.float32([0.0, 0.0004, 7.9053111, 9.0])])


def test_tanh_float32_matches_float64_and_jnp_to_a_few_ulp():
    x = _grid()
    got = np.asarray(jax.jit(tanh)(x))
    exact = np.tanh(x.astype(np.float64))
    # relative accuracy everywhere, including near 0 (where 2 sigmoid(2x) - 1 would lose it)
    rel = np.abs(got - exact) / np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    assert rel.max() <= 4 * eps(np.float32), rel.max()
    np.testing.assert_allclose(got, np.asarray(jnp.tanh(x)), rtol=rtol_for(np.float32), atol=0)
    assert np.all(np.abs(got) <= 1) and np.all(np.sign(got) == np.sign(x))


def test_tanh_special_values():
    x = jnp.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30])
    got = np.asarray(tanh(x))
    np.testing.assert_array_equal(got[[0, 1, 5, 6]], [1, -1, 1, -1])
    assert np.isnan(got[2]) and got[3] == 0 and np.signbit(got[4])


def test_tanh_gradients_match_jnp():
    x = jnp.asarray(_grid()[::37])
    for order in (1, 2):
        ours, ref = tanh, jnp.tanh
        for _ in range(order):
            ours, ref = (
                jax.grad(lambda v, f=ours: jnp.sum(f(v))),
                jax.grad(lambda v, f=ref: jnp.sum(f(v))),
            )
        a, r = np.asarray(jax.jit(ours)(x)), np.asarray(jax.jit(ref)(x))
        # d/dx = (1 - y)(1 + y) from y within a few ulp: relative to the derivative's scale (1)
        np.testing.assert_allclose(a, r, rtol=rtol_for(np.float32), atol=rtol_for(np.float32))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_tanh_other_dtypes_are_jnp_tanh(dtype):
    x = jnp.linspace(-4, 4, 101).astype(dtype)
    assert tanh(x).dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(tanh(x), np.float32), np.asarray(jnp.tanh(x), np.float32)
    )


def test_tanh_is_jnp_tanh_off_cpu(monkeypatch):
    from dlkit.ops import activations

    x = jnp.linspace(-4, 4, 101, dtype=jnp.float32)
    assert " tanh " not in str(jax.make_jaxpr(lambda v: tanh(v))(x))
    monkeypatch.setattr(activations, "platform_of", lambda x: "gpu")
    assert " tanh " in str(jax.make_jaxpr(lambda v: tanh(v))(x))
    np.testing.assert_array_equal(np.asarray(tanh(x)), np.asarray(jnp.tanh(x)))
