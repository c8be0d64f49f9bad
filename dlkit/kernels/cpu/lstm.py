"""LSTM layers through oneDNN's RNN primitive (XLA FFI custom calls), with a custom VJP.

`lstm_stack(xs, carries, weights, biases)` has the signature and math of
`dlkit.ops.lstm_stack.lstm_stack` (its reference): time-major xs (T, B, D), per layer a carry
(c, h) (B, H), weights [W_x; W_h] (D_l + H, 4H) with gates (i, f, g, o), bias (4H,). Each layer
is one oneDNN call over the whole sequence (its forward keeps a workspace for its backward); the
backward is one call per layer giving dx, the initial carry's and the weights' gradients. On
several threads a call either runs one oneDNN team over the batch (which syncs every time step) or
splits the batch into a chunk of rows per thread (`split`; weight gradients summed in chunk order):
the split wins while a core's cache holds W_h (see `splits`). Under
`jax.vmap` the calls run once per example (vmap_method="sequential"). XLA does not partition a
custom call: dispatch.lstm_stack runs it per batch shard under a mesh.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dlkit.kernels.cpu import library

# The largest hidden size a call splits its batch at: W_h (16 H^2 bytes, 1 MiB at 256) then fits a
# core's L2, which every chunk re-reads each time step. fwd+bwd of a 2-layer stack on 2 threads,
# split vs one team (AMD EPYC Zen 4, 2 vCPUs; /BUILD_NOTES.md "oneDNN LSTM"): H 128 1.5x, 256
# 1.3-2.0x faster; H 512 0.68x at 32 rows, 1.06x at 128; H 1024 0.56x.
SPLIT_MAX_HIDDEN = 256


def splits(batch: int, hidden: int, threads: int) -> bool:
    """Whether a call on `threads` splits its batch into a chunk of rows per thread."""
    return threads > 1 and batch >= threads and hidden <= SPLIT_MAX_HIDDEN


def _call(target: str, results, threads: int, split: bool, *args):
    library.load()  # registers the targets (idempotent)
    call = jax.ffi.ffi_call(target, results, vmap_method="sequential")
    return call(*args, threads=np.int64(threads), split=np.int64(split))


def _forward(x, h0, c0, wx, wh, b, threads, split):
    (t, n, c), h = x.shape, wh.shape[0]
    ws_bytes = library.lstm_workspace_bytes(t, n, c, h, threads, split)
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    results = [
        f32((t, n, h)),
        f32((n, h)),
        f32((n, h)),
        jax.ShapeDtypeStruct((ws_bytes,), jnp.uint8),
    ]
    return _call("dlkit_onednn_lstm_fwd", results, threads, split, x, h0, c0, wx, wh, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _layer(x, h0, c0, wx, wh, b, threads, split):
    y, h_t, c_t, _ = _forward(x, h0, c0, wx, wh, b, threads, split)
    return y, h_t, c_t


def _layer_fwd(x, h0, c0, wx, wh, b, threads, split):
    y, h_t, c_t, ws = _forward(x, h0, c0, wx, wh, b, threads, split)
    return (y, h_t, c_t), (x, h0, c0, wx, wh, b, y, h_t, c_t, ws)


def _layer_bwd(threads, split, res, cts):
    x, h0, c0, wx, wh, b = res[:6]
    results = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, h0, c0, wx, wh, b)]
    return tuple(_call("dlkit_onednn_lstm_bwd", results, threads, split, *res, *cts))


_layer.defvjp(_layer_fwd, _layer_bwd)


def lstm_stack(xs, carries, weights, biases, *, threads: int = 1, split: bool | None = None):
    """L LSTM layers over t = 1..T, one oneDNN call per layer; time-major, float32.

    xs (T, B, D); carries: per layer (c, h), each (B, H); weights: per layer [W_x; W_h]
    (D_l + H, 4H); biases: per layer (4H,). Returns (final carries, hs (T, B, H) of the top layer).
    split: chunks of rows per thread (True), one team (False), or by `splits` (None).
    """
    if not library.available():
        raise RuntimeError(
            f"dlkit.kernels.cpu.lstm_stack is unavailable: {library.why_unavailable()}"
        )
    finals, x, threads = [], xs, int(threads)
    for (c0, h0), w, b in zip(carries, weights, biases, strict=True):
        d = x.shape[-1]
        cut = splits(x.shape[1], h0.shape[-1], threads) if split is None else bool(split)
        x, h_t, c_t = _layer(x, h0, c0, w[:d], w[d:], b, threads, cut)
        finals.append((c_t, h_t))
    return tuple(finals), x
