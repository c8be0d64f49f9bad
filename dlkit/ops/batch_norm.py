"""Training-mode batch normalization with the batch's own statistics, ReLU optionally fused.

`batch_norm(x, scale, bias, epsilon, relu, residual)` returns (y, mean, var): statistics over every
axis but the last (the channels), y = relu?((x - mean) * (rsqrt(var + eps) * scale) + bias
(+ residual)), var biased; the residual (x's shape) is a ResNet block's shortcut.
The reference is flax.linen.BatchNorm's math (float32 statistics, var = E[x^2] - E[x]^2 clipped at
0); `dlkit.nn.BatchNorm` calls this op on its training path and keeps the running averages.

`impl`: "reference" (jnp; "fast" is the same), a backend registered with `register_impl`
(dlkit.kernels registers its CPU kernel library's batch norm as "onednn", the name the library's
convs and LSTM use, though this kernel is plain C++), or "auto" (the default): on CPU the first
registered backend whose `available(x, scale, bias)` accepts the call, else "reference".
"""

import jax
import jax.numpy as jnp

from dlkit import errors
from dlkit.ops.platform import platform_of, register_backend, registered_choice

# name -> (fn, available): backends implemented above this layer (dlkit.kernels), registered by
# their package at import; "auto" on CPU tries them in this order.
_REGISTERED: dict = {}


def batch_norm_reference(x, scale, bias, epsilon=1e-5, relu=False, residual=None):
    """(y, mean, var) in flax.linen.BatchNorm's float32 math; x (..., C), scale and bias (C,)."""
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
    y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
    y = y.astype(jnp.result_type(x, scale, bias))  # flax's output dtype (bf16 stays bf16)
    y = y if residual is None else y + residual
    return (jnp.maximum(y, 0) if relu else y), mean, var


def register_impl(name: str, fn, *, available=None) -> None:
    """Makes fn(x, scale, bias, epsilon, relu, residual) -> (y, mean, var) the CPU impl `name`;
    "auto" prefers it to "reference" where available(x, scale, bias) is true."""
    register_backend(_REGISTERED, name, fn, available, ("reference", "fast"), "batch_norm")


def choose_impl(x, scale, bias, *, platform: str | None = None) -> str:
    """The impl "auto" uses for these arguments on `platform` (default: `platform_of(x)`)."""
    return (
        registered_choice(_REGISTERED, (x, scale, bias), platform or platform_of(x)) or "reference"
    )


def check_shapes(x, scale, bias, residual=None) -> None:
    """A one-line ValueError unless x is (..., C), scale and bias (C,), residual x's shape."""
    c = x.shape[-1] if x.ndim else None
    if x.ndim < 2 or scale.shape != (c,) or bias.shape != (c,):
        raise ValueError(
            f"batch_norm: x must be (..., C) with >= 2 axes and scale, bias (C,); got x "
            f"{x.shape}, scale {scale.shape}, bias {bias.shape}"
        )
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"batch_norm: residual {residual.shape} must have x's shape {x.shape}")


def batch_norm(x, scale, bias, epsilon=1e-5, relu=False, residual=None, *, impl: str = "auto"):
    """(relu?(normalized x * scale + bias (+ residual)), batch mean, biased batch var); x (..., C)
    with C = scale's and bias's length, statistics over all axes but the last."""
    check_shapes(x, scale, bias, residual)
    impls = {"auto": None, "reference": batch_norm_reference, "fast": batch_norm_reference}
    impls.update({n: fn for n, (fn, _) in _REGISTERED.items()})
    fn = errors.choose(impls, impl, "batch_norm implementation")
    fn = fn or impls[choose_impl(x, scale, bias)]
    return fn(x, scale, bias, epsilon, relu, residual)
