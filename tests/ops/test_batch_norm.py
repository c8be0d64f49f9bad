"""dlkit.ops.batch_norm's reference against flax.linen.BatchNorm, and dlkit.nn.BatchNorm's paths
that run flax's own code (inference, a named axis, a mask). The native kernel: tests/kernels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_trees_close

from dlkit.nn.norm import BatchNorm
from dlkit.ops.batch_norm import batch_norm


def _x(shape=(6, 4, 4, 8), seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * 3 + 1, jnp.float32)


@pytest.mark.parametrize("relu", [False, True])
def test_reference_is_flax_math(relu):
    x = _x()
    v = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
    scale, bias = jnp.linspace(0.5, 2, 8), jnp.linspace(-1, 1, 8)
    params = {"params": {"scale": scale, "bias": bias}, "batch_stats": v["batch_stats"]}
    want, upd = nn.BatchNorm(use_running_average=False, momentum=0.0).apply(
        params, x, mutable=["batch_stats"]
    )  # momentum 0: the new running averages are the batch statistics
    y, mean, var = batch_norm(x, scale, bias, 1e-5, relu, impl="reference")
    assert_trees_close(
        (y, mean, var), (nn.relu(want) if relu else want, *upd["batch_stats"].values()), 96
    )


def test_reference_adds_the_residual_before_the_relu():
    x, r = _x(), _x(seed=1)
    c = jnp.ones(8)
    y, _, _ = batch_norm(x, c, c * 0, relu=True, residual=r, impl="reference")
    plain, _, _ = batch_norm(x, c, c * 0, impl="reference")
    np.testing.assert_array_equal(y, jnp.maximum(plain + r, 0))


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_module_inference_mask_and_axis_name_run_flax(impl):
    x = _x()
    mine = BatchNorm(use_running_average=True, relu=True, impl=impl)
    v = mine.init(jax.random.key(0), x)
    want = nn.relu(nn.BatchNorm(use_running_average=True).apply(v, x))
    np.testing.assert_array_equal(mine.apply(v, x), want)
    mask = jnp.arange(x.shape[0])[:, None, None, None] < 4
    train = BatchNorm(use_running_average=False, impl=impl)
    got, _ = train.apply(v, x, mask=jnp.broadcast_to(mask, x.shape), mutable=["batch_stats"])
    flax, _ = nn.BatchNorm(use_running_average=False).apply(
        v, x, mask=jnp.broadcast_to(mask, x.shape), mutable=["batch_stats"]
    )
    np.testing.assert_array_equal(got, flax)
    synced = BatchNorm(use_running_average=False, axis_name="batch", impl=impl)
    run = jax.vmap(lambda x: synced.apply(v, x, mutable=["batch_stats"])[0], axis_name="batch")
    np.testing.assert_allclose(
        run(x[:, None]),
        train.apply(v, x, mutable=["batch_stats"])[0][:, None],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float32])
def test_module_keeps_flax_dtypes(param_dtype):
    """bf16 inputs: the output dtype is flax's (bf16 with bf16 parameters), statistics float32."""
    x = _x().astype(jnp.bfloat16)
    mine = BatchNorm(use_running_average=False, param_dtype=param_dtype)
    theirs = nn.BatchNorm(use_running_average=False, param_dtype=param_dtype)
    v = theirs.init(jax.random.key(0), x)
    got, got_stats = mine.apply(v, x, mutable=["batch_stats"])
    want, want_stats = theirs.apply(v, x, mutable=["batch_stats"])
    assert got.dtype == want.dtype
    assert jax.tree.map(lambda a: a.dtype, got_stats) == jax.tree.map(lambda a: a.dtype, want_stats)
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-2, atol=1e-2
    )
