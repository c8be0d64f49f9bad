"""Training-mode batch normalization as native CPU custom calls (XLA FFI), with a custom VJP.

`batch_norm(x, scale, bias, epsilon, relu, residual)` has the signature and math of
`dlkit.ops.batch_norm.batch_norm_reference` (its reference): statistics over every axis but the
last of a float32 x (..., C), y = relu?((x - mean) * scale / sqrt(var + eps) + bias (+ residual)),
returning (y, mean, biased var). The kernel (batch_norm.cc) sums x shifted by its first row (the
reference, as flax does, E[x^2] - E[x]^2): equal to float tolerance. The backward is one call
(dx, dscale, dbias, dresidual; the ReLU mask is y > 0); the statistics' own cotangents, zero in a
train step (they only feed the running averages), are added in jnp when they are not. Under
`jax.vmap` the calls run once per example (vmap_method="sequential"). XLA does not partition a
custom call, and the statistics must be over the whole batch: dlkit.kernels.cpu.dispatch leaves a
split batch to the reference.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dlkit.kernels.cpu import library
from dlkit.ops.batch_norm import check_shapes

_NONE = (1,)  # the shape of the residual operand and gradient without a residual


def _call(target: str, results, cfg, *args):
    relu, residual, epsilon, threads = cfg
    library.load()  # registers the targets (idempotent)
    call = jax.ffi.ffi_call(target, results, vmap_method="sequential")
    attrs = {"relu": np.int64(relu), "residual": np.int64(residual)}
    return call(*args, **attrs, eps=np.float32(epsilon), threads=np.int64(threads))


def _forward(x, scale, bias, res, cfg):
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    results = [f32(x.shape), f32(scale.shape), f32(scale.shape)]
    return _call("dlkit_cpu_bn_fwd", results, cfg, x, scale, bias, res)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _bn(x, scale, bias, res, cfg):
    return tuple(_forward(x, scale, bias, res, cfg))


def _bn_fwd(x, scale, bias, res, cfg):
    x, scale, bias, res = (p.value for p in (x, scale, bias, res))  # symbolic_zeros
    y, mean, var = _forward(x, scale, bias, res, cfg)
    return (y, mean, var), (x, y, scale, mean, var)


def _stat_grads(x, mean, gmean, gvar):
    """d(mean, var)/dx applied to their cotangents: gmean / M + gvar * 2 (x - mean) / M."""
    m = x.size // x.shape[-1]
    gx = jnp.zeros_like(x)
    if not isinstance(gmean, SymbolicZero):
        gx = gx + gmean / m
    if not isinstance(gvar, SymbolicZero):
        gx = gx + gvar * 2.0 * (x - mean) / m
    return gx


def _bn_bwd(cfg, saved, cts):
    x, y, scale, mean, var = saved
    gy, gmean, gvar = cts
    if isinstance(gy, SymbolicZero):
        gy = jnp.zeros_like(x)
    shapes = (x.shape, scale.shape, scale.shape, x.shape if cfg[1] else _NONE)
    results = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    args = (x, y, scale, mean, var, gy)
    dx, dscale, dbias, dres = _call("dlkit_cpu_bn_bwd", results, cfg, *args)
    if not (isinstance(gmean, SymbolicZero) and isinstance(gvar, SymbolicZero)):
        dx = dx + _stat_grads(x, mean, gmean, gvar)
    return dx, dscale, dbias, dres


_bn.defvjp(_bn_fwd, _bn_bwd, symbolic_zeros=True)


def batch_norm(x, scale, bias, epsilon=1e-5, relu=False, residual=None, *, threads: int = 1):
    """(relu?(normalized x * scale + bias (+ residual)), batch mean, biased batch var); x (..., C)
    float32, scale and bias (C,), residual None or x's shape."""
    if not library.available():
        raise RuntimeError(
            f"dlkit.kernels.cpu.batch_norm is unavailable: {library.why_unavailable()}"
        )
    check_shapes(x, scale, bias, residual)
    res = jnp.zeros(_NONE, jnp.float32) if residual is None else residual
    cfg = (bool(relu), residual is not None, float(epsilon), int(threads))
    return _bn(x, scale, bias, res, cfg)
