"""dlkit.ops.gru_stack (wavefront stack, hand-written backward) against layer-by-layer scans."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from tolerances import rtol_for

from dlkit.ops import recurrent as r
from dlkit.ops.gru_stack import gru_stack

T, B, D, H = 6, 3, 5, 4


def problem(layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(T, B, D)))
    dims = [D] + [H] * (layers - 1)
    params = tuple(
        tuple(
            jnp.asarray(rng.normal(size=s) * 0.5) for s in ((d, 3 * H), (H, 3 * H), (3 * H,), (H,))
        )
        for d in dims
    )
    carries = tuple(jnp.asarray(rng.normal(size=(B, H))) for _ in dims)
    return xs, carries, params


def layer_by_layer(xs, carries, params):
    """The same stack as separate lax.scans of gru_step, batch-major, projection hoisted."""
    x, finals = jnp.swapaxes(xs, 0, 1), []
    for (w_x, w_h, b, b_hn), carry in zip(params, carries, strict=True):
        step = functools.partial(r.gru_step, w_h=w_h, b_hn=b_hn)
        carry, x = r.scan_steps(step, carry, x @ w_x + b)
        finals.append(carry)
    return tuple(finals), jnp.swapaxes(x, 0, 1)


def loss(fn, xs, carries, params):
    """Touches the outputs and every final h, so every cotangent is non-zero."""
    finals, hs = fn(xs, carries, params)
    return jnp.sum(jnp.sin(hs) * jnp.arange(H)) + sum(jnp.sum(jnp.cos(h)) for h in finals)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_stack_equals_layer_by_layer_in_value_and_gradient(layers):
    with jax.enable_x64(True):
        args = problem(layers, seed=layers)
        fused = functools.partial(gru_stack, unroll=2)
        (f_fin, f_hs), (p_fin, p_hs) = fused(*args), layer_by_layer(*args)
        tol = rtol_for(np.float64, T * layers * (D + H))
        np.testing.assert_allclose(f_hs, p_hs, rtol=tol, atol=tol)
        for a, b in zip(f_fin, p_fin, strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        g_fused = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2))(*args)
        g_plain = jax.grad(functools.partial(loss, layer_by_layer), argnums=(0, 1, 2))(*args)
        for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_plain), strict=True):
            np.testing.assert_allclose(a, b, rtol=tol * B * T, atol=tol)


def test_stack_passes_check_grads():
    with jax.enable_x64(True):
        check_grads(functools.partial(loss, gru_stack), problem(2, seed=7), order=1, modes=["rev"])


def test_one_step_and_float32_jit():
    xs, carries, params = jax.tree.map(lambda a: a.astype(jnp.float32), problem(2, seed=3))
    xs = xs[:1]
    (f_fin, f_hs) = jax.jit(gru_stack)(xs, carries, params)
    (p_fin, p_hs) = layer_by_layer(xs, carries, params)
    tol = rtol_for(np.float32, D + H)
    for a, b in zip(f_fin, p_fin, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(f_hs, p_hs, rtol=tol, atol=tol)
    assert f_hs.dtype == jnp.float32 and f_hs.shape == (1, B, H)


def test_bad_shapes_name_them():
    xs, carries, params = problem(2)
    with pytest.raises(ValueError, match=r"xs must be \(T >= 1, B, D\).*got \(3, 5\)"):
        gru_stack(xs[0], carries, params)
    with pytest.raises(ValueError, match=r"layer 1 needs \(W_x, W_h, b, b_hn\) of shapes"):
        gru_stack(xs, carries, (params[0], params[0]))
    with pytest.raises(ValueError, match=r"layer 0 carry must be \(B, H\) = \(3, 4\)"):
        gru_stack(xs, (carries[0][:2], carries[1]), params)
    with pytest.raises(ValueError, match="got 1 carries and 2 parameter sets"):
        gru_stack(xs, carries[:1], params)
