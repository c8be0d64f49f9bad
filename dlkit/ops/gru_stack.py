"""A stack of GRU layers run as one wavefront scan, with a hand-written backward pass.

The GRU twin of dlkit.ops.lstm_stack: at scan iteration s layer l runs time step t = s - l, so
the layers' matmuls within an iteration are independent and the stack takes T + L - 1 sequential
iterations instead of L * T. Each layer and step does x_t W_x + b and h_{t-1} W_h inside the scan
(the GRU's candidate gate needs them apart: n = tanh(xw_n + r (h W_hn + b_hn))), so no
(T, B, 3H) projected input is materialised. The backward scan runs the same wavefront in reverse,
carrying dh per layer and passing dx of layer l down to layer l - 1 one iteration later; dW_x,
dW_h and the biases are one matmul or sum per layer after it. Gates (r, z, n) as
`dlkit.ops.recurrent.gru_step`; the sigmoids are tanh's, s(x) = (1 + tanh(x / 2)) / 2.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _valid(s, layer: int, steps: int):
    """Whether layer `layer` has a real time step t = s - layer at iteration s."""
    return (s >= layer) & (s - layer < steps)


def _cell(x, h, w_x, w_h, b, b_hn):
    """One GRU step; returns (h_new, r, z, n, hn) with hn = h W_hn + b_hn."""
    hidden = h.shape[-1]
    xw = x @ w_x + b  # (B, 3H)
    hw = h @ w_h  # (B, 3H)
    rz = 0.5 * jnp.tanh(0.5 * (xw[:, : 2 * hidden] + hw[:, : 2 * hidden])) + 0.5
    r, z = rz[:, :hidden], rz[:, hidden:]
    hn = hw[:, 2 * hidden :] + b_hn
    n = jnp.tanh(xw[:, 2 * hidden :] + r * hn)
    return n + z * (h - n), r, z, n, hn


def _forward(xs, carries, params, unroll):
    """The wavefront scan; returns final carries, top outputs and the backward's residuals."""
    steps, layers = xs.shape[0], len(params)
    pad = jnp.zeros((layers - 1, *xs.shape[1:]), xs.dtype)

    def body(state, inp):
        x_s, s = inp
        new, saved = [], []
        for layer in range(layers):
            h = state[layer]
            x = x_s if layer == 0 else state[layer - 1]  # layer below, one iteration ago
            h_new, r, z, n, hn = _cell(x, h, *params[layer])
            new.append(jnp.where(_valid(s, layer, steps), h_new, h))
            saved.append((x, h, jnp.concatenate([r, z, n, hn], axis=-1)))
        return tuple(new), (tuple(saved), new[-1])

    scanned = (jnp.concatenate([xs, pad]), jnp.arange(steps + layers - 1))
    finals, (saved, tops) = lax.scan(body, tuple(carries), scanned, unroll=unroll)
    return finals, tops[layers - 1 :], saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _stack(xs, carries, params, unroll):
    finals, hs, _ = _forward(xs, carries, params, unroll)
    return finals, hs


def _stack_fwd(xs, carries, params, unroll):
    finals, hs, saved = _forward(xs, carries, params, unroll)
    return (finals, hs), (saved, params)


def _stack_bwd(unroll, res, cts):
    """Reverse wavefront: layer l at iteration s gets dh from layer l + 1 at iteration s + 1."""
    saved, params = res
    d_finals, dhs = cts
    layers, hidden = len(params), params[0][1].shape[0]
    steps = dhs.shape[0]
    w_xts = [None] + [p[0].T for p in params[1:]]  # layer 0's dx: one matmul after the scan
    w_hts = [p[1].T for p in params]
    pad = jnp.zeros((layers - 1, *dhs.shape[1:]), dhs.dtype)

    def body(carry, inp):
        dstate, from_above = carry
        dh_top, res_s, s = inp
        new, down, grads = [], [], []
        for layer in range(layers):
            _, h_prev, gates = res_s[layer]
            r, z, n, hn = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
            dh = (dh_top if layer == layers - 1 else from_above[layer]) + dstate[layer]
            da_n = dh * (1 - z) * (1 - n * n)
            da_r = da_n * hn * r * (1 - r)
            da_z = dh * (h_prev - n) * z * (1 - z)
            ok = _valid(s, layer, steps)
            dxw = jnp.where(ok, jnp.concatenate([da_r, da_z, da_n], axis=-1), 0.0)  # (B, 3H)
            dhw = jnp.where(ok, jnp.concatenate([da_r, da_z, da_n * r], axis=-1), 0.0)
            new.append(jnp.where(ok, dh * z, dh) + dhw @ w_hts[layer])
            if layer:
                down.append(dxw @ w_xts[layer])
            grads.append((dxw, dhw))
        return (tuple(new), tuple(down)), tuple(grads)

    init = (tuple(d_finals), tuple(jnp.zeros_like(dhs[0]) for _ in range(layers - 1)))
    scanned = (jnp.concatenate([pad, dhs]), saved, jnp.arange(steps + layers - 1))
    (d_carries, _), grads = lax.scan(body, init, scanned, reverse=True, unroll=unroll)
    d_params = tuple(
        (
            jnp.einsum("sbi,sbg->ig", saved[k][0], dxw),  # sum over steps of x^T dxw
            jnp.einsum("sbi,sbg->ig", saved[k][1], dhw),  # sum over steps of h_prev^T dhw
            jnp.sum(dxw, axis=(0, 1)),
            jnp.sum(dhw[..., 2 * hidden :], axis=(0, 1)),
        )
        for k, (dxw, dhw) in enumerate(grads)
    )
    dxs = jnp.einsum("tbg,ig->tbi", grads[0][0][:steps], params[0][0])
    return dxs, d_carries, d_params


_stack.defvjp(_stack_fwd, _stack_bwd)


def gru_stack(xs, carries, params, *, unroll: int = 1):
    """L unmasked GRU layers over t = 1..T in one wavefront scan; time-major.

    xs (T, B, D); carries: per layer h (B, H); params: per layer (W_x (D_l, 3H), W_h (H, 3H),
    b (3H,), b_hn (H,)) with D_0 = D and D_l = H above. Returns (final carries, hs (T, B, H) of the
    top layer). Equal to running `scan_steps(gru_step, ...)` layer after layer.
    """
    carries, params = tuple(carries), tuple(map(tuple, params))
    if xs.ndim != 3 or xs.shape[0] < 1 or not params:
        raise ValueError(f"gru_stack: xs must be (T >= 1, B, D) with >= 1 layer, got {xs.shape}")
    if len(carries) != len(params):
        raise ValueError(
            f"gru_stack: got {len(carries)} carries and {len(params)} parameter sets; "
            "give one of each per layer"
        )
    batch, hidden = xs.shape[1], params[0][1].shape[0]
    for k, (p, h) in enumerate(zip(params, carries, strict=True)):
        d_in = xs.shape[2] if k == 0 else hidden
        want = ((d_in, 3 * hidden), (hidden, 3 * hidden), (3 * hidden,), (hidden,))
        if len(p) != 4 or tuple(a.shape for a in p) != want:
            raise ValueError(
                f"gru_stack: layer {k} needs (W_x, W_h, b, b_hn) of shapes {want}, "
                f"got {tuple(getattr(a, 'shape', None) for a in p)}"
            )
        if h.shape != (batch, hidden):
            raise ValueError(
                f"gru_stack: layer {k} carry must be (B, H) = ({batch}, {hidden}), got {h.shape}"
            )
    dtype = jnp.result_type(xs, *jax.tree.leaves(params))  # bf16 inputs, f32 weights: f32
    cast = functools.partial(jax.tree.map, lambda a: a.astype(dtype))
    return _stack(cast(xs), cast(carries), cast(params), unroll)
