"""Inputs and the output-and-gradients probe shared by the attention tests (ops and kernels)."""

import jax
import jax.numpy as jnp
import numpy as np


def qkv(b, sq, sk, h, hkv, d, dtype=jnp.float32, seed=0):
    """Random q (B, Sq, H, D), k and v (B, Sk, Hkv, D) of `dtype`."""
    r = np.random.default_rng(seed)
    q = r.normal(size=(b, sq, h, d))
    k, v = r.normal(size=(2, b, sk, hkv, d))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def loss_and_grads(fn, q, k, v):
    """(out, (dq, dk, dv)) of sum(out * w) with a fixed, non-uniform w; fn called once, jitted."""
    w = jnp.cos(jnp.arange(q.size, dtype=jnp.float32)).reshape(q.shape)

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * w), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(q, k, v)
    return out, grads
