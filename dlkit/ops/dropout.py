"""Dropout with 16 random bits per element (half the random words of `jax.random.bernoulli`)."""

import math

import jax
import jax.numpy as jnp

BITS = 16  # random bits per element: two elements per 32-bit threefry word


def keep_threshold(rate: float) -> int:
    """t such that an element is kept when its 16 random bits are < t (P = t / 2^16)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1], got {rate}")
    return round((1.0 - rate) * 2**BITS)


def dropout(x, rate: float, key, broadcast_dims=()):
    """x * mask * 2^16 / t: each element kept with P = t / 2^16 = 1 - rate to within 2^-17,
    scaled so E[out] = x exactly; `broadcast_dims` share one mask (flax's Dropout contract)."""
    t = keep_threshold(rate)
    if t == 0:
        return jnp.zeros_like(x)
    if t == 2**BITS:
        return x
    shared = {a % x.ndim for a in broadcast_dims}
    shape = tuple(1 if d in shared else n for d, n in enumerate(x.shape))  # the mask's shape
    n = math.prod(shape)
    words = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([words & 0xFFFF, words >> 16])[:n].reshape(shape)
    keep = jnp.broadcast_to(halves < t, x.shape)
    return jnp.where(keep, x * jnp.asarray(2**BITS / t, x.dtype), jnp.zeros((), x.dtype))
