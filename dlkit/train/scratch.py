"""SGD (with momentum) and Adam written from scratch as optax GradientTransformations.

An optax optimizer is a pair of pure functions: `init(params) -> state` and
`update(grads, state, params) -> (updates, new_state)`; `optax.apply_updates` then adds the
updates to the params. These two follow the notes' formulas and match `optax.sgd` / `optax.adam`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class SgdState(NamedTuple):
    """count: steps taken; trace: the momentum buffer v (None without momentum)."""

    count: jax.Array
    trace: optax.Params | None


class AdamState(NamedTuple):
    """count t, first moment m and second moment v, one of each per parameter."""

    count: jax.Array
    mu: optax.Params
    nu: optax.Params


def _rate(learning_rate, count):
    """The learning rate at step `count`: a float, or a schedule called with the step."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def sgd(learning_rate, momentum: float | None = None, nesterov: bool = False):
    """v <- g + mu v;  update = -lr v (nesterov: -lr (g + mu v)); no momentum: update = -lr g."""
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"sgd: momentum must be in [0, 1), got {momentum}")

    def init(params):
        trace = jax.tree.map(jnp.zeros_like, params) if momentum else None
        return SgdState(jnp.zeros((), jnp.int32), trace)

    def update(grads, state, params=None):
        del params
        lr = _rate(learning_rate, state.count)
        trace = state.trace
        if momentum:
            trace = jax.tree.map(lambda g, v: g + momentum * v, grads, state.trace)
            direction = trace
            if nesterov:
                direction = jax.tree.map(lambda g, v: g + momentum * v, grads, trace)
        else:
            direction = grads
        updates = jax.tree.map(lambda d: -lr * d, direction)
        return updates, SgdState(state.count + 1, trace)

    return optax.GradientTransformation(init, update)


def adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """m <- b1 m + (1-b1) g,  v <- b2 v + (1-b2) g^2,  update = -lr m_hat / (sqrt(v_hat) + eps),
    with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t) and t the step counted from 1."""
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"adam: b1 and b2 must be in [0, 1), got b1={b1}, b2={b2}")

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        lr = _rate(learning_rate, state.count)
        t = state.count + 1
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g * g) + b2 * v, grads, state.nu)
        c1 = 1 - b1 ** t.astype(jnp.float32)
        c2 = 1 - b2 ** t.astype(jnp.float32)
        updates = jax.tree.map(lambda m, v: -lr * ((m / c1) / (jnp.sqrt(v / c2) + eps)), mu, nu)
        return updates, AdamState(t, mu, nu)

    return optax.GradientTransformation(init, update)
