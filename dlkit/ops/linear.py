"""Affine maps."""

import jax


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """linear(x, w, b) = x @ w + b; x (..., D_in), w (D_in, D_out), b (D_out,) -> (..., D_out)."""
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"linear: x has last dim {x.shape[-1]} but w is {w.shape} (D_in, D_out)")
    y = x @ w
    return y if b is None else y + b
