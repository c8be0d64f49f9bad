"""Pooling over NHWC maps, and the output-size and receptive-field arithmetic of the notes."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def spatial_padding(padding) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """Padding as "SAME"/"VALID", an int p (p on each side), (ph, pw) or ((t, b), (l, r))."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    pads = tuple(padding)
    if len(pads) != 2:
        raise ValueError(f"padding {padding!r} must be an int, (ph, pw) or ((t, b), (l, r))")
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in pads)


def _pool(x, init, op, window, stride, padding):
    if x.ndim != 4:
        raise ValueError(f"pooling expects NHWC (B, H, W, C), got shape {x.shape}")
    wh, ww = _pair(window)
    sh, sw = _pair(stride if stride is not None else window)
    pad = spatial_padding(padding)
    pad = pad if isinstance(pad, str) else ((0, 0), *pad, (0, 0))
    return lax.reduce_window(x, init, op, (1, wh, ww, 1), (1, sh, sw, 1), pad)


def max_pool(x: jax.Array, window=2, stride=None, padding="VALID") -> jax.Array:
    """y[b,i,j,c] = max over the window at (i*s, j*s); x (B, H, W, C), stride defaults to window.

    padding: "VALID", "SAME", an int p (p on every side, as PyTorch's MaxPool2d(padding=p)),
    (ph, pw) or ((top, bottom), (left, right)); padded cells never win the max."""
    return _pool(x, -jnp.inf, lax.max, window, stride, padding)


def avg_pool(x: jax.Array, window=2, stride=None, padding="VALID") -> jax.Array:
    """y[b,i,j,c] = mean over the window at (i*s, j*s) (padding not counted); x (B, H, W, C)."""
    total = _pool(x, 0.0, lax.add, window, stride, padding)
    count = _pool(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, lax.add, window, stride, padding)
    return total / count


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | str = 0) -> int:
    """out = floor((n + 2p - k) / s) + 1; padding "SAME" gives ceil(n / s), "VALID" p = 0."""
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        padding = 0
    out = (size + 2 * padding - kernel) // stride + 1
    if out <= 0:
        raise ValueError(
            f"kernel {kernel} with stride {stride}, padding {padding} does not fit {size}"
        )
    return out


pool_output_size = conv_output_size


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """r_L = 1 + sum_l (k_l - 1) * prod_{i<l} s_i for (kernel, stride) layers, input to output."""
    r, jump = 1, 1
    for k, s in layers:
        r += (k - 1) * jump
        jump *= s
    return r
