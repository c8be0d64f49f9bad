"""Recurrent cells as pure step functions, and the scan that runs one over time.

Every step takes the input already projected, xw = x W_x + b (B, G*H), so the input matmul of all
time steps can be done at once outside the scan; only h W_h stays inside. Gates are fused into one
matrix: W_x (D, G*H), W_h (H, G*H). Gate order follows PyTorch: LSTM (i, f, g, o), GRU (r, z, n).
A step is `step(carry, xw) -> (carry, h)`.
"""

import functools

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


def _lstm_gates(z: jax.Array) -> jax.Array:
    """[s(i), s(f), tanh(g), s(o)] from z (B, 4H) with one tanh: s(x) = (1 + tanh(x / 2)) / 2."""
    hidden = z.shape[-1] // 4
    half = jnp.concatenate(
        [jnp.full((2 * hidden,), 0.5), jnp.ones((hidden,)), jnp.full((hidden,), 0.5)]
    )
    a = jnp.tanh(z * half.astype(z.dtype))
    return jnp.where(half == 1.0, a, 0.5 * a + 0.5)


def _lstm_forward(xs, c0, h0, w_h, unroll):
    """Forward LSTM scan keeping what the backward pass needs; xs (T, B, 4H)."""

    def body(carry, x_t):
        c, h = carry
        i, f, g, o = jnp.split(_lstm_gates(x_t + h @ w_h), 4, axis=-1)
        c = f * c + i * g
        tc = jnp.tanh(c)
        h = o * tc
        return (c, h), (jnp.concatenate([i, f, g, o], axis=-1), c, tc, h)

    _, out = lax.scan(body, (c0, h0), xs, unroll=unroll)
    return out  # gates (T, B, 4H), cs, tanh(cs), hs (T, B, H)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lstm_seq(xs, c0, h0, w_h, unroll):
    _, cs, _, hs = _lstm_forward(xs, c0, h0, w_h, unroll)
    return hs, (cs[-1], hs[-1])


def _lstm_seq_fwd(xs, c0, h0, w_h, unroll):
    gates, cs, tcs, hs = _lstm_forward(xs, c0, h0, w_h, unroll)
    return (hs, (cs[-1], hs[-1])), (gates, cs, tcs, hs, c0, h0, w_h)


def _lstm_seq_bwd(unroll, res, cts):
    """Reverse scan carrying (dc, dh); every factor without dc or dh is computed before it."""
    gates, cs, tcs, hs, c0, h0, w_h = res
    dhs, (dc_last, dh_last) = cts
    c_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)  # (T, B, H)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    dc_factor = jnp.concatenate([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], axis=-1)
    dh_factor = tcs * o * (1 - o)  # dz_o = dh * dh_factor
    k = o * (1 - tcs * tcs)  # dc += dh * k
    w_t = w_h.T

    def body(carry, inp):
        dc, dh_rec = carry
        dh_out, dcf, dhf, k_t, f_t = inp
        dh = dh_out + dh_rec
        dc = dc + dh * k_t
        dz = jnp.concatenate([jnp.tile(dc, 3) * dcf, dh * dhf], axis=-1)  # (B, 4H)
        return (dc * f_t, dz @ w_t), dz

    dhs = dhs.at[-1].add(dh_last)
    (dc0, dh0), dzs = lax.scan(
        body,
        (dc_last, jnp.zeros_like(h0)),
        (dhs, dc_factor, dh_factor, k, f),
        reverse=True,
        unroll=unroll,
    )
    dw_h = jnp.einsum("tbh,tbg->hg", h_prev, dzs)  # one matmul over all steps
    return dzs, dc0, dh0, dw_h


_lstm_seq.defvjp(_lstm_seq_fwd, _lstm_seq_bwd)


def lstm_sequence(xw: jax.Array, carry, w_h: jax.Array, *, unroll: int = 1):
    """Unmasked LSTM over t = 1..T with a hand-written backward pass (dW_h as one matmul).

    xw (B, T, 4H), carry (c, h) (B, H) -> ((c_T, h_T), hs (B, T, H)); equal to
    scan_steps(lstm_step, ...) but faster to differentiate.
    """
    c0, h0 = carry
    if (
        xw.ndim != 3
        or xw.shape[-1] != w_h.shape[1]
        or w_h.shape != (h0.shape[-1], 4 * h0.shape[-1])
    ):
        raise ValueError(
            f"lstm_sequence: xw {xw.shape} must be (B, T, 4H) with w_h {w_h.shape} (H, 4H)"
        )
    hs, final = _lstm_seq(jnp.swapaxes(xw, 0, 1), c0, h0, w_h, unroll)
    return final, jnp.swapaxes(hs, 0, 1)
