"""2-D convolution through oneDNN's CPU kernels (XLA FFI custom calls), with a custom VJP.

`conv2d(x, w, b, stride, padding, relu)` computes relu?(conv(x, w) + b) for x (B, H, W, C_in)
NHWC float32 and w (kh, kw, C_in, C_out) HWIO, the same math as `dlkit.ops.conv.conv2d_reference`
(lax.conv_general_dilated), which it is tested against. Gradients: backward-data and
backward-weights (+ bias) custom calls; on CPUs without AVX-512 a spatial kernel over an output
map of at most 16 pixels takes its weight gradient from one XLA dot over im2col patches
(`weight_grad`, weight_grad_impl). Under `jax.vmap` each custom call gets its operands with
a leading vmap dim (vmap_method="expand_dims"): batched activations with shared weights fold into
the conv's batch (one call; per-example gradients), batched weights (ensembles) loop in C++.
XLA does not partition a custom call: give `mesh` (and `batch_axis`) to run it per batch shard
under shard_map, or call conv2d inside your own shard_map.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from dlkit.kernels.cpu import library
from dlkit.ops.conv import explicit_padding, im2col_weight_grad

# Output maps of at most this many pixels (4x4) take their weight gradient from im2col and XLA's
# dot on CPUs without AVX-512: there oneDNN 3.2's backward-weights is its old jit:avx2 kernel,
# 2x slower than the dot on ResNet-18's 4x4x512 layers (BUILD_NOTES, "oneDNN convs").
SMALL_MAP_PIXELS = 16
WEIGHT_GRADS = ("auto", "onednn", "im2col")


class ConvConfig(NamedTuple):
    """The static attributes of one conv (hashable: a custom_vjp nondiff argument)."""

    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    relu: bool
    bias: bool
    threads: int
    weight_grad: str = "onednn"  # "onednn" (the backward-weights call) or "im2col"

    def attrs(self) -> dict:
        (pt, pb), (pl, pr) = self.padding
        return {
            "stride_h": np.int64(self.stride[0]),
            "stride_w": np.int64(self.stride[1]),
            "pad_top": np.int64(pt),
            "pad_bottom": np.int64(pb),
            "pad_left": np.int64(pl),
            "pad_right": np.int64(pr),
            "threads": np.int64(self.threads),
        }

    def out_hw(self, h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
        (pt, pb), (pl, pr) = self.padding
        return (h + pt + pb - kh) // self.stride[0] + 1, (w + pl + pr - kw) // self.stride[1] + 1


def weight_grad_impl(out_hw, kernel_hw, vector_width: int) -> str:
    """weight_grad="auto" (pure): "im2col" for a spatial kernel over an output map of at most
    SMALL_MAP_PIXELS on a CPU without AVX-512 (vector_width < 16), else "onednn"."""
    small = out_hw[0] * out_hw[1] <= SMALL_MAP_PIXELS and kernel_hw[0] * kernel_hw[1] > 1
    return "im2col" if small and vector_width < 16 else "onednn"


def default_threads() -> int:
    """oneDNN threads per call: the usable cores shared among the process's CPU devices."""
    return max(1, library.usable_cores() // max(1, jax.local_device_count("cpu")))


def _ffi(target: str, shapes, vmap_method="expand_dims"):
    library.load()  # registers the targets (idempotent)
    results = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.ffi.ffi_call(target, results, vmap_method=vmap_method)


def _forward(x, w, b, cfg: ConvConfig):
    ho, wo = cfg.out_hw(x.shape[1], x.shape[2], w.shape[0], w.shape[1])
    call = _ffi("dlkit_onednn_conv_fwd", [(x.shape[0], ho, wo, w.shape[3])])
    return call(x, w, b, relu=np.int64(cfg.relu), bias=np.int64(cfg.bias), **cfg.attrs())[0]


def _backward_data(g, w, x_shape, cfg: ConvConfig):
    return _ffi("dlkit_onednn_conv_bwd_data", [x_shape])(g, w, **cfg.attrs())[0]


def _backward_weights(x, g, w_shape, cfg: ConvConfig):
    call = _ffi("dlkit_onednn_conv_bwd_weights", [w_shape, (w_shape[3],)])
    dw, db = call(x, g, **cfg.attrs())
    return dw, db


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x, w, b, cfg: ConvConfig):
    return _forward(x, w, b, cfg)


def _conv_fwd(x, w, b, cfg: ConvConfig):
    y = _forward(x, w, b, cfg)
    return y, (x, w, y if cfg.relu else None)


def _conv_bwd(cfg: ConvConfig, residuals, g):
    x, w, y = residuals
    if cfg.relu:
        g = jnp.where(y > 0, g, jnp.zeros_like(g))
    dx = _backward_data(g, w, x.shape, cfg)
    if cfg.weight_grad == "im2col":  # one XLA dot of x's patches with g
        dw = im2col_weight_grad(x, g, w.shape[:2], cfg.padding, cfg.stride)
        db = g.sum((0, 1, 2))
    else:
        dw, db = _backward_weights(x, g, w.shape, cfg)
    return dx, dw, db if cfg.bias else jnp.zeros_like(db)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _check(x, w, b, cfg: ConvConfig):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(
            f"onednn conv2d expects x (B, H, W, C_in) and w (kh, kw, C_in, C_out); got x "
            f"{x.shape}, w {w.shape}"
        )
    if x.shape[3] != w.shape[2]:
        raise ValueError(
            f"onednn conv2d: x has {x.shape[3]} channels but w {w.shape} wants {w.shape[2]}"
        )
    if b is not None and b.shape != (w.shape[3],):
        raise ValueError(f"onednn conv2d: bias {b.shape} should be ({w.shape[3]},)")
    for name, a in (("x", x), ("w", w), ("b", b)):
        if a is not None and a.dtype != jnp.float32:
            raise ValueError(f"onednn conv2d takes float32; {name} is {a.dtype}")
    if min(cfg.stride) < 1 or min(min(p) for p in cfg.padding) < 0:
        raise ValueError(
            f"onednn conv2d: stride {cfg.stride} must be >= 1, padding {cfg.padding} >= 0"
        )
    if min(cfg.out_hw(x.shape[1], x.shape[2], w.shape[0], w.shape[1])) < 1:
        raise ValueError(
            f"onednn conv2d: kernel {w.shape[:2]} larger than the padded input "
            f"{x.shape[1:3]} + {cfg.padding}"
        )


def conv2d(
    x,  # (B, H, W, C_in) float32
    w,  # (kh, kw, C_in, C_out) float32
    b=None,  # (C_out,) or None
    stride=(1, 1),
    padding=((0, 0), (0, 0)),  # ((top, bottom), (left, right)), "SAME", "VALID" or an int
    relu: bool = False,
    *,
    threads: int | None = None,  # oneDNN threads per call; default: default_threads()
    mesh=None,  # a jax Mesh: run per shard of x's batch along `batch_axis`
    batch_axis="data",
    weight_grad: str = "auto",  # "onednn", "im2col" or "auto" (weight_grad_impl)
):
    """relu?(conv(x, w) + b) (B, Ho, Wo, C_out) through oneDNN; differentiable, vmappable."""
    if not library.available():
        raise RuntimeError(f"dlkit.kernels.cpu.conv2d is unavailable: {library.why_unavailable()}")
    if weight_grad not in WEIGHT_GRADS:
        raise ValueError(f"onednn conv2d: weight_grad={weight_grad!r}; use one of {WEIGHT_GRADS}")
    x, w = jnp.asarray(x), jnp.asarray(w)
    stride = (int(stride), int(stride)) if isinstance(stride, int) else tuple(map(int, stride))
    pads = explicit_padding(padding, w.shape[:2], stride, x.shape[1:3])
    cfg = ConvConfig(stride, pads, bool(relu), b is not None, int(threads or default_threads()))
    b = jnp.asarray(b) if b is not None else None
    _check(x, w, b, cfg)
    if weight_grad == "auto":
        out_hw = cfg.out_hw(x.shape[1], x.shape[2], w.shape[0], w.shape[1])
        weight_grad = weight_grad_impl(out_hw, w.shape[:2], library.vector_width())
    cfg = cfg._replace(weight_grad=weight_grad)
    bias = b if b is not None else jnp.zeros((w.shape[3],), jnp.float32)
    if mesh is None:
        return _conv(x, w, bias, cfg)
    return _shard_map(lambda xs, ws, bs: _conv(xs, ws, bs, cfg), mesh, batch_axis)(x, w, bias)


def _shard_map(f, mesh, batch_axis):
    """f over x's batch shards along `batch_axis`, w and b replicated (jax.shard_map, jax >= 0.7).

    check_vma=False: the custom calls carry no varying-axes types; the gradients of the
    replicated w and b are summed over the shards by shard_map's transpose (tested on 2 devices).
    """
    batch, rep = PartitionSpec(batch_axis), PartitionSpec()
    return jax.shard_map(f, mesh=mesh, in_specs=(batch, rep, rep), out_specs=batch, check_vma=False)
