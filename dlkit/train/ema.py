"""EMA of the weights (`config.ema.decay`): a float32 moving average of the params in the state.

The simple, documented choice of big_vision and the Flax examples: the average starts at the
step-0 params (after init_from, word vectors and freezing) and is not debiased; after every
optimizer step `ema <- ema + (1 - decay) (params - ema)` (so a param that does not move, e.g. a
frozen one, stays bit-equal in the average). Mutable collections (BatchNorm statistics) are
already running averages: the EMA variables pair the averaged params with the raw model_state.
"""

import jax
import jax.numpy as jnp


def _float32(x):
    """x in float32 if it is a floating array of lower precision, else x."""
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        return x.astype(jnp.float32)
    return x


def start(state, decay: float):
    """state with its EMA started at its params (a float32 copy), or state itself for decay 0."""
    if not decay:
        return state
    return state.replace(ema_params=jax.tree.map(_float32, state.params), ema_decay=float(decay))


def restart(state):
    """state with its EMA (if it has one) reset to its params, e.g. after init_from."""
    return start(state, state.ema_decay) if state.ema_params is not None else state


def update(ema, params, decay: float):
    """ema + (1 - decay) (params - ema), leaf by leaf, in the EMA's dtype (float32)."""

    def one(e, p):
        if not jnp.issubdtype(e.dtype, jnp.inexact):
            return p.astype(e.dtype)
        return e + (1.0 - decay) * (p.astype(e.dtype) - e)

    return jax.tree.map(one, ema, params)


def as_params(ema, params):
    """The EMA in the params' dtypes: drop-in params for apply_fn."""
    return jax.tree.map(lambda e, p: e if e.dtype == p.dtype else e.astype(p.dtype), ema, params)


def view(state):
    """state with the EMA as its params (for evaluation); state.ema_params must be set."""
    return state.replace(params=as_params(state.ema_params, state.params))
