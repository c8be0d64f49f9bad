"""Positional encodings: sinusoidal, learned and rotary (RoPE)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_table(positions: jax.Array, dim: int) -> jax.Array:
    """PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(...); (...) -> (..., dim)."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dimension, got {dim}")
    freqs = 10000.0 ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # (dim/2,)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotates pairs (x_i, x_{i+D/2}) by p * base^(-2i/D); x (B,S,H,D), positions (B,S)|(S,)."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary positions need an even head_dim, got x {x.shape}")
    positions = jnp.broadcast_to(jnp.asarray(positions), x.shape[:2])  # (B, S)
    freqs = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # (D/2,)
    angles = positions[..., None, None].astype(jnp.float32) * freqs  # (B, S, 1, D/2)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def default_positions(x: jax.Array, offset=0) -> jax.Array:
    """offset + [0, 1, ..., T-1] as (1, T) for x (B, T, ...)."""
    return (offset + jnp.arange(x.shape[1]))[None]


class SinusoidalPositions(nn.Module):
    """x + PE[positions]; x (B, T, E), positions (B, T) or None (0..T-1)."""

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        positions = default_positions(x) if positions is None else positions
        return x + sinusoidal_table(positions, x.shape[-1]).astype(x.dtype)


class LearnedPositions(nn.Module):
    """x + P[positions] with a trained table P (max_len, E); x (B, T, E)."""

    max_len: int

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        if positions is None:
            if x.shape[1] > self.max_len:
                raise ValueError(
                    f"sequence length {x.shape[1]} (x {x.shape}) exceeds max_len={self.max_len}; "
                    "raise the model's max_len"
                )
            positions = default_positions(x)
        table = nn.Embed(self.max_len, x.shape[-1], name="table")
        return x + table(positions).astype(x.dtype)


POSITIONAL = ("learned", "sinusoidal", "rope", "none")
