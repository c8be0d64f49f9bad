"""A stack of LSTM layers run as one wavefront scan, with a hand-written backward pass.

At scan iteration s layer l runs time step t = s - l, so the layers' matmuls within an iteration
are independent and the stack takes T + L - 1 sequential iterations instead of L * T. The input
projection stays inside the scan, z_t = [x_t, h_{t-1}] W + b with W = [W_x; W_h] (D + H, 4H): one
matmul per layer and step, and no (T, B, 4H) projected input is ever materialised. The backward
scan runs the same wavefront in reverse, carrying (dc, dh) per layer and passing dx of layer l
down to layer l - 1 one iteration later; dW = sum_t [x_t, h_{t-1}]^T dz_t is one matmul per layer
after it. Gate order (i, f, g, o) as `dlkit.ops.recurrent.lstm_step`. Measured on 2 CPU cores
(BUILD_NOTES, "Sequences"): ~15% less time per char_lstm train step than layer-by-layer scans
with the projection hoisted out of them.

`impl`: "wavefront" (this scan), a backend registered with `register_impl` (dlkit.kernels
registers oneDNN's LSTM as "onednn"), or "auto" (the default): on CPU the first registered
backend whose `available(xs, carries, weights, biases)` accepts the call, else "wavefront".
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from dlkit import errors
from dlkit.ops.platform import platform_of, register_backend, registered_choice

# name -> (fn, available): backends implemented above this layer (dlkit.kernels), registered by
# their package at import; "auto" on CPU tries them in this order.
_REGISTERED: dict = {}


def lstm_gates(z: jax.Array) -> jax.Array:
    """[s(i), s(f), tanh(g), s(o)] from z (B, 4H) with one tanh: s(x) = (1 + tanh(x / 2)) / 2."""
    hidden = z.shape[-1] // 4
    col = lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)
    is_g = (col >= 2 * hidden) & (col < 3 * hidden)
    a = jnp.tanh(jnp.where(is_g, z, 0.5 * z))
    return jnp.where(is_g, a, 0.5 * a + 0.5)


def _split(a: jax.Array, hidden: int):
    return tuple(a[:, k * hidden : (k + 1) * hidden] for k in range(4))


def _valid(s, layer: int, steps: int):
    """Whether layer `layer` has a real time step t = s - layer at iteration s."""
    return (s >= layer) & (s - layer < steps)


def _forward(xs, carries, weights, biases, unroll):
    """The wavefront scan; returns final carries, top outputs and the backward's residuals."""
    steps, layers = xs.shape[0], len(weights)
    hidden = carries[0][1].shape[-1]
    pad = jnp.zeros((layers - 1, *xs.shape[1:]), xs.dtype)

    def body(state, inp):
        x_s, s = inp
        new, saved = [], []
        for layer in range(layers):
            c, h = state[layer]
            x = x_s if layer == 0 else state[layer - 1][1]  # layer below, one iteration ago
            cat = jnp.concatenate([x, h], axis=-1)  # (B, D_l + H)
            a = lstm_gates(cat @ weights[layer] + biases[layer])
            i, f, g, o = _split(a, hidden)
            c_new = f * c + i * g
            tc = jnp.tanh(c_new)
            h_new = o * tc
            ok = _valid(s, layer, steps)
            new.append((jnp.where(ok, c_new, c), jnp.where(ok, h_new, h)))
            saved.append((cat, a, c, tc))
        return tuple(new), (tuple(saved), new[-1][1])

    scanned = (jnp.concatenate([xs, pad]), jnp.arange(steps + layers - 1))
    finals, (saved, tops) = lax.scan(body, tuple(carries), scanned, unroll=unroll)
    return finals, tops[layers - 1 :], saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _stack(xs, carries, weights, biases, unroll):
    finals, hs, _ = _forward(xs, carries, weights, biases, unroll)
    return finals, hs


def _stack_fwd(xs, carries, weights, biases, unroll):
    finals, hs, saved = _forward(xs, carries, weights, biases, unroll)
    return (finals, hs), (saved, weights, xs.shape[-1])


def _stack_bwd(unroll, res, cts):
    """Reverse wavefront: layer l at iteration s gets dh from layer l + 1 at iteration s + 1."""
    saved, weights, in_dim = res
    d_finals, dhs = cts
    layers, hidden = len(weights), weights[0].shape[1] // 4
    steps = dhs.shape[0]
    dims = [w.shape[0] - hidden for w in weights]
    # layer 0's dx is one matmul after the scan; inside it only its h-rows are needed
    w_ts = [weights[0][in_dim:].T] + [w.T for w in weights[1:]]
    pad = jnp.zeros((layers - 1, *dhs.shape[1:]), dhs.dtype)

    def body(carry, inp):
        dstate, from_above = carry
        dh_top, res_s, s = inp
        new, down, dzs = [], [], []
        for layer in range(layers):
            dc, dh_rec = dstate[layer]
            _, a, c_prev, tc = res_s[layer]
            i, f, g, o = _split(a, hidden)
            dh = (dh_top if layer == layers - 1 else from_above[layer]) + dh_rec
            dc_t = dc + dh * o * (1 - tc * tc)
            dz = jnp.concatenate(
                [dc_t * g * i * (1 - i), dc_t * c_prev * f * (1 - f), dc_t * i * (1 - g * g)]
                + [dh * tc * o * (1 - o)],
                axis=-1,
            )
            ok = _valid(s, layer, steps)
            dz = jnp.where(ok, dz, 0.0)  # (B, 4H); zero where the layer had no real step
            d_in = dz @ w_ts[layer]  # (B, D_l + H), or (B, H) for layer 0
            off = 0 if layer == 0 else dims[layer]
            new.append((jnp.where(ok, dc_t * f, dc), jnp.where(ok, d_in[:, off:], dh_rec)))
            if layer:
                down.append(d_in[:, :off])
            dzs.append(dz)
        return (tuple(new), tuple(down)), tuple(dzs)

    init = (tuple(d_finals), tuple(jnp.zeros_like(dhs[0]) for _ in range(layers - 1)))
    scanned = (jnp.concatenate([pad, dhs]), saved, jnp.arange(steps + layers - 1))
    (d_carries, _), dzs = lax.scan(body, init, scanned, reverse=True, unroll=unroll)
    d_weights = tuple(
        jnp.einsum("sbi,sbg->ig", saved[k][0], dzs[k]) for k in range(layers)
    )  # sum over steps of [x, h_prev]^T dz
    d_biases = tuple(jnp.sum(dz, axis=(0, 1)) for dz in dzs)
    dxs = jnp.einsum("tbg,ig->tbi", dzs[0][:steps], weights[0][:in_dim])
    return dxs, d_carries, d_weights, d_biases


_stack.defvjp(_stack_fwd, _stack_bwd)


def register_impl(name: str, fn, *, available=None) -> None:
    """Makes fn(xs, carries, weights, biases) -> (finals, hs) the CPU impl `name`; "auto" prefers
    it to "wavefront" where available(same arguments) is true."""
    register_backend(_REGISTERED, name, fn, available, ("wavefront",), "lstm_stack")


def choose_impl(xs, carries, weights, biases, *, platform: str | None = None) -> str:
    """The impl "auto" uses for these arguments on `platform` (default: `platform_of(xs)`)."""
    args = (xs, carries, weights, biases)
    return registered_choice(_REGISTERED, args, platform or platform_of(xs)) or "wavefront"


def lstm_stack(xs, carries, weights, biases, *, unroll: int = 1, impl: str = "auto"):
    """L unmasked LSTM layers over t = 1..T (one wavefront scan, or a registered impl); time-major.

    xs (T, B, D); carries: per layer (c, h), each (B, H); weights: per layer [W_x; W_h]
    (D_l + H, 4H) with D_0 = D and D_l = H above; biases: per layer (4H,).
    Returns (final carries, hs (T, B, H) of the top layer). Equal to running
    `scan_steps(lstm_step, ...)` layer after layer, and faster to differentiate.
    """
    carries, weights, biases = tuple(map(tuple, carries)), tuple(weights), tuple(biases)
    if xs.ndim != 3 or xs.shape[0] < 1 or not weights:
        raise ValueError(f"lstm_stack: xs must be (T >= 1, B, D) with >= 1 layer, got {xs.shape}")
    if not len(carries) == len(weights) == len(biases):
        raise ValueError(
            f"lstm_stack: got {len(carries)} carries, {len(weights)} weights and "
            f"{len(biases)} biases; give one of each per layer"
        )
    batch, hidden = xs.shape[1], weights[0].shape[-1] // 4
    for k, (w, b, (c, h)) in enumerate(zip(weights, biases, carries, strict=True)):
        d_in = xs.shape[2] if k == 0 else hidden
        if w.shape != (d_in + hidden, 4 * hidden) or b.shape != (4 * hidden,):
            raise ValueError(
                f"lstm_stack: layer {k} needs weights ({d_in}+{hidden}, {4 * hidden}) and bias "
                f"({4 * hidden},), got {w.shape} and {b.shape}"
            )
        if c.shape != (batch, hidden) or h.shape != (batch, hidden):
            raise ValueError(
                f"lstm_stack: layer {k} carry must be (B, H) = ({batch}, {hidden}), "
                f"got c {c.shape}, h {h.shape}"
            )
    dtype = jnp.result_type(xs, *weights, *biases)  # e.g. bf16 inputs with f32 weights: f32
    cast = functools.partial(jax.tree.map, lambda a: a.astype(dtype))
    args = cast(xs), cast(carries), cast(weights), cast(biases)
    errors.choose({"auto": 0, "wavefront": 0, **_REGISTERED}, impl, "lstm_stack implementation")
    name = choose_impl(*args) if impl == "auto" else impl
    if name == "wavefront":
        return _stack(*args, unroll)
    return _REGISTERED[name][0](*args)
