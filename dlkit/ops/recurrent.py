"""Recurrent cells as pure step functions, and the scan that runs one over time.

Every step takes the input already projected, xw = x W_x + b (B, G*H), so the input matmul of all
time steps can be done at once outside the scan; only h W_h stays inside. Gates are fused into one
matrix: W_x (D, G*H), W_h (H, G*H). Gate order follows PyTorch: LSTM (i, f, g, o), GRU (r, z, n).
A step is `step(carry, xw) -> (carry, h)`.
"""

import jax
import jax.numpy as jnp
from jax import lax

NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check(xw: jax.Array, h: jax.Array, w_h: jax.Array, gates: int, name: str) -> None:
    hidden = h.shape[-1]
    if w_h.shape != (hidden, gates * hidden) or xw.shape != (*h.shape[:-1], gates * hidden):
        raise ValueError(
            f"{name}_step: expected h (B, H), xw (B, {gates}H), w_h (H, {gates}H); "
            f"got h {h.shape}, xw {xw.shape}, w_h {w_h.shape}"
        )


def rnn_step(h: jax.Array, xw: jax.Array, w_h: jax.Array):
    """h_t = tanh(x_t W_x + b + h_{t-1} W_h); h (B, H), xw (B, H), w_h (H, H) -> (h_t, h_t)."""
    _check(xw, h, w_h, 1, "rnn")
    h = jnp.tanh(xw + h @ w_h)
    return h, h


def lstm_step(carry: tuple[jax.Array, jax.Array], xw: jax.Array, w_h: jax.Array):
    """c_t = s(f) c + s(i) tanh(g), h_t = s(o) tanh(c_t), [i f g o] = xw + h W_h; carry (c, h)."""
    c, h = carry
    _check(xw, h, w_h, 4, "lstm")
    i, f, g, o = jnp.split(xw + h @ w_h, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


def gru_step(h: jax.Array, xw: jax.Array, w_h: jax.Array, b_hn: jax.Array):
    """r,z = s(xw_rz + h W_rz), n = tanh(xw_n + r (h W_n + b_hn)), h_t = (1 - z) n + z h."""
    _check(xw, h, w_h, 3, "gru")
    hw = h @ w_h  # (B, 3H)
    hidden = h.shape[-1]
    rz = jax.nn.sigmoid(xw[..., : 2 * hidden] + hw[..., : 2 * hidden])
    r, z = rz[..., :hidden], rz[..., hidden:]
    n = jnp.tanh(xw[..., 2 * hidden :] + r * (hw[..., 2 * hidden :] + b_hn))
    h = (1.0 - z) * n + z * h
    return h, h


def zero_carry(kind: str, batch: int, hidden: int, dtype=jnp.float32):
    """The all-zero initial state: h (B, H), or (c, h) for the LSTM."""
    h = jnp.zeros((batch, hidden), dtype)
    return (h, h) if kind == "lstm" else h


def lengths_to_mask(lengths: jax.Array, steps: int) -> jax.Array:
    """mask[b, t] = t < lengths[b]; lengths (B,) -> (B, T) bool."""
    return jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]


def scan_steps(step, carry, xw: jax.Array, *, mask=None, reverse=False, unroll=1):
    """Runs step over t (backwards if reverse); xw (B,T,G*H), mask (B,T) -> (carry, ys (B,T,H)).

    Where mask[b, t] is False the carry of row b is left untouched and ys[b, t] = 0, so the final
    carry is the state after each row's last real step (its first, when reverse).
    """
    if xw.ndim != 3:
        raise ValueError(f"scan_steps: xw must be (B, T, G*H), got {xw.shape}")
    xs = jnp.swapaxes(xw, 0, 1)  # (T, B, G*H)
    if mask is None:
        carry, ys = lax.scan(step, carry, xs, reverse=reverse, unroll=unroll)
        return carry, jnp.swapaxes(ys, 0, 1)
    if mask.shape != xw.shape[:2]:
        raise ValueError(f"scan_steps: mask {mask.shape} must be (B, T) = {xw.shape[:2]}")
    ms = jnp.swapaxes(jnp.asarray(mask, bool), 0, 1)[..., None]  # (T, B, 1)

    def body(c, inp):
        x_t, m_t = inp
        new_c, y = step(c, x_t)
        new_c = jax.tree.map(lambda n, o: jnp.where(m_t, n, o), new_c, c)
        return new_c, jnp.where(m_t, y, jnp.zeros_like(y))

    carry, ys = lax.scan(body, carry, (xs, ms), reverse=reverse, unroll=unroll)
    return carry, jnp.swapaxes(ys, 0, 1)
