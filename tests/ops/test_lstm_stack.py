"""dlkit.ops.lstm_stack (wavefront stack, hand-written backward) against layer-by-layer scans."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dlkit.ops import lstm_stack
from dlkit.ops import recurrent as r

T, B, D, H = 6, 3, 5, 4


def problem(layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(T, B, D)))
    dims = [D] + [H] * (layers - 1)
    ws = tuple(jnp.asarray(rng.normal(size=(d + H, 4 * H)) * 0.5) for d in dims)
    bs = tuple(jnp.asarray(rng.normal(size=(4 * H,)) * 0.1) for _ in dims)
    carries = tuple(
        (jnp.asarray(rng.normal(size=(B, H))), jnp.asarray(rng.normal(size=(B, H)))) for _ in dims
    )
    return xs, carries, ws, bs


def layer_by_layer(xs, carries, ws, bs, unroll=1):
    """The same stack as separate lax.scans of lstm_step, batch-major, projection hoisted."""
    x, finals = jnp.swapaxes(xs, 0, 1), []
    for w, b, carry in zip(ws, bs, carries, strict=True):
        d = x.shape[-1]
        step = functools.partial(r.lstm_step, w_h=w[d:])
        carry, x = r.scan_steps(step, carry, x @ w[:d] + b)
        finals.append(carry)
    return tuple(finals), jnp.swapaxes(x, 0, 1)


def loss(fn, xs, carries, ws, bs):
    """Touches the outputs and every final c and h, so every cotangent is non-zero."""
    finals, hs = fn(xs, carries, ws, bs)
    extra = sum(jnp.sum(c**2) + jnp.sum(jnp.cos(h)) for c, h in finals)
    return jnp.sum(jnp.sin(hs) * jnp.arange(H)) + extra


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_stack_equals_layer_by_layer_in_value_and_gradient(layers):
    with jax.enable_x64(True):
        args = problem(layers, seed=layers)
        fused = functools.partial(lstm_stack, unroll=2)
        (f_fin, f_hs), (p_fin, p_hs) = fused(*args), layer_by_layer(*args)
        np.testing.assert_allclose(f_hs, p_hs, rtol=1e-12)
        for a, b in zip(jax.tree.leaves(f_fin), jax.tree.leaves(p_fin), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        g_fused = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2, 3))(*args)
        g_plain = jax.grad(functools.partial(loss, layer_by_layer), argnums=(0, 1, 2, 3))(*args)
        for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_plain), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_stack_passes_check_grads():
    with jax.enable_x64(True):
        args = problem(2, seed=7)
        check_grads(functools.partial(loss, lstm_stack), args, order=1, modes=["rev"])


def test_one_step_and_float32_jit():
    xs, carries, ws, bs = (
        jax.tree.map(lambda a: a.astype(jnp.float32), p) for p in problem(2, seed=3)
    )
    xs = xs[:1]
    (f_fin, f_hs), (p_fin, p_hs) = (
        jax.jit(lstm_stack)(xs, carries, ws, bs),
        layer_by_layer(xs, carries, ws, bs),
    )
    for a, b in zip(jax.tree.leaves(f_fin), jax.tree.leaves(p_fin), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_hs, p_hs, rtol=1e-5, atol=1e-6)
    assert f_hs.dtype == jnp.float32 and f_hs.shape == (1, B, H)


def test_bad_shapes_name_them():
    xs, carries, ws, bs = problem(2)
    with pytest.raises(ValueError, match=r"xs must be \(T >= 1, B, D\).*got \(3, 5\)"):
        lstm_stack(xs[0], carries, ws, bs)
    with pytest.raises(ValueError, match=r"layer 1 needs weights \(4\+4, 16\).*got \(9, 16\)"):
        lstm_stack(xs, carries, (ws[0], ws[0]), bs)
    with pytest.raises(ValueError, match=r"layer 0 carry must be \(B, H\) = \(3, 4\)"):
        lstm_stack(xs, ((carries[0][0][:2], carries[0][1]), carries[1]), ws, bs)
    with pytest.raises(ValueError, match="got 1 carries, 2 weights and 2 biases"):
        lstm_stack(xs, carries[:1], ws, bs)
