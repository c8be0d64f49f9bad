"""oneDNN kernels as impls of dlkit.ops: which calls they take, and per batch shard under a mesh.

The conv is `dlkit.ops.conv2d`'s impl "onednn", the LSTM `dlkit.ops.lstm_stack`'s, the batch norm
`dlkit.ops.batch_norm`'s (not under a mesh that splits the batch: its statistics must be over the
whole batch, which XLA's reference computes across the shards).

`accepts(x, w, stride, padding)` is the impl's `available`: float32 NHWC 4-D maps whose conv
has an output (else "auto" takes "fast"), with the library loaded (first asked at the first CPU
conv, never at import). `conv2d(x, w, stride, padding)` runs the kernel; under jit inside
`jax.set_mesh(mesh)` (dlkit's Runner traces its steps so) with a mesh of several devices it runs
per batch shard over every mesh axis that is not already manual (jax.shard_map, weights
replicated, their gradients summed), since XLA does not partition a custom call (it would
gather the batch onto every device and run it whole on each). A batch that does not divide
among the devices (a vmapped per-example call) runs unsplit: the same values, more work.
Threads per call: the usable cores shared among the mesh's devices (all of them without a mesh
of several devices, as one device uses the whole machine), so a run's count depends only on its
layout (bitwise reruns).
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from dlkit.kernels.cpu import conv, library, lstm, norm
from dlkit.kernels.cpu.attention import attention as native_attention
from dlkit.ops.conv import bias_relu


def accepts(x, w, stride=1, padding="SAME") -> bool:
    """True for a float32 NHWC conv of arrays (not shapes: jax.ShapeDtypeStruct) the kernel
    computes, once the library loads."""
    arrays = all(isinstance(a, jax.Array | np.ndarray) for a in (x, w))
    if not arrays or x.ndim != 4 or w.ndim != 4 or x.shape[3] != w.shape[2]:
        return False
    if jnp.dtype(x.dtype) != jnp.float32 or jnp.dtype(w.dtype) != jnp.float32:
        return False
    try:
        s = (int(stride),) * 2 if isinstance(stride, int) else tuple(int(i) for i in stride)
        pads = conv.explicit_padding(padding, w.shape[:2], s, x.shape[1:3])
        cfg = conv.ConvConfig(s, pads, False, False, 1)
        if min(s) < 1 or min(min(p) for p in pads) < 0:
            return False
        if min(cfg.out_hw(x.shape[1], x.shape[2], w.shape[0], w.shape[1])) < 1:
            return False
    except (TypeError, ValueError):
        return False
    return library.available()


def split_axes(mesh) -> tuple[str, ...]:
    """The axes of a (abstract) mesh a batch is split over: its non-manual axes of size > 1."""
    manual = set(getattr(mesh, "manual_axes", ()))
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True)) if not mesh.empty else {}
    return tuple(a for a, n in sizes.items() if a not in manual and n > 1)


def _devices(mesh, axes) -> int:
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    n = 1
    for a in axes:
        n *= sizes[a]
    return n


def _layout(batch: int) -> tuple[tuple[str, ...], int]:
    """(mesh axes to split a batch of `batch` over, or () to run unsplit; oneDNN threads per call)
    under the context mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    axes = split_axes(mesh)
    if not axes:  # no mesh, one device, or already inside a shard_map over every axis
        return (), library.usable_cores()
    n = _devices(mesh, axes)
    return (axes if batch % n == 0 else ()), max(1, library.usable_cores() // n)


def _per_shard(f, axes, in_specs, out_specs):
    return jax.shard_map(
        f,
        mesh=jax.sharding.get_abstract_mesh(),
        in_specs=in_specs,
        out_specs=out_specs,
        axis_names=set(axes),
        check_vma=False,
    )


def conv2d(x, w, stride=1, padding="SAME", b=None, relu=False):
    """relu?(conv(x, w) + b) (B, Ho, Wo, C_out) through oneDNN (bias and ReLU fused into the
    call), per batch shard under a context mesh."""
    if b is not None and jnp.dtype(b.dtype) != jnp.float32:  # the kernel's bias is float32
        return bias_relu(conv2d(x, w, stride, padding), b, relu)
    axes, threads = _layout(x.shape[0])
    if not axes:
        return conv.conv2d(x, w, b, stride, padding, relu, threads=threads)
    pads = conv.explicit_padding(padding, w.shape[:2], stride, x.shape[1:3])

    def one(xs, ws, *bs):
        return conv.conv2d(xs, ws, *bs or (None,), stride, pads, relu, threads=threads)

    batch, rep = PartitionSpec(axes), PartitionSpec()
    operands = (x, w) if b is None else (x, w, b)
    return _per_shard(one, axes, (batch, rep, rep)[: len(operands)], batch)(*operands)


def _float32_arrays(*arrays) -> bool:
    """True when every argument is a float32 array (not a shape: jax.ShapeDtypeStruct)."""
    return all(
        isinstance(a, jax.Array | np.ndarray) and jnp.dtype(a.dtype) == jnp.float32 for a in arrays
    )


def lstm_accepts(xs, carries, weights, biases) -> bool:
    """True for float32 arrays, once the library loads (else "auto" takes the wavefront scan)."""
    return _float32_arrays(xs, *jax.tree.leaves((carries, weights, biases))) and library.available()


def lstm_stack(xs, carries, weights, biases):
    """ops.lstm_stack through oneDNN (a call per layer), per batch shard under a context mesh."""
    carries, weights, biases = tuple(map(tuple, carries)), tuple(weights), tuple(biases)
    axes, threads = _layout(xs.shape[1])
    run = functools.partial(lstm.lstm_stack, threads=threads)
    if not axes:
        return run(xs, carries, weights, biases)
    seq, batch, rep = PartitionSpec(None, axes), PartitionSpec(axes), PartitionSpec()
    carry = tuple((batch, batch) for _ in carries)
    return _per_shard(run, axes, (seq, carry, rep, rep), (carry, seq))(xs, carries, weights, biases)


def batch_norm_accepts(x, scale, bias) -> bool:
    """True for float32 arrays outside a mesh that splits the batch, once the library loads
    (else "auto" takes the reference)."""
    if not _float32_arrays(x, scale, bias) or x.ndim < 2:
        return False
    return not split_axes(jax.sharding.get_abstract_mesh()) and library.available()


def batch_norm(x, scale, bias, epsilon=1e-5, relu=False, residual=None):
    """ops.batch_norm through the native kernel, with every usable core."""
    return norm.batch_norm(x, scale, bias, epsilon, relu, residual, threads=library.usable_cores())


def attention_accepts(q, k, mask=None, segment_ids=None, kv_lengths=None) -> bool:
    """True for float32 (B, S, H, D) arrays without mask arrays, once the library loads (else
    "auto" takes XLA's attention)."""
    if any(a is not None for a in (mask, segment_ids, kv_lengths)) or q.ndim != 4:
        return False
    return _float32_arrays(q, k) and library.available()


def attention(q, k, v, *, causal=False, scale=None):
    """dot_product_attention through the native kernel, per batch shard under a context mesh."""
    axes, threads = _layout(q.shape[0])
    run = functools.partial(native_attention, causal=causal, scale=scale, threads=threads)
    if not axes:
        return run(q, k, v)
    batch = PartitionSpec(axes)
    return _per_shard(run, axes, (batch, batch, batch), batch)(q, k, v)


_CALL = re.compile(
    r"stablehlo\.custom_call @dlkit_(onednn_conv|onednn_lstm|cpu_attn)_(\w+)\("
    r".*\} : \((.*)\) -> (.*)$"
)
_SHAPE = re.compile(r"tensor<((?:\d+x)*)(?:f32|ui8)>")


def _shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in m.split("x") if d) for m in _SHAPE.findall(text)]


def _conv_call_flops(kind: str, ins, outs) -> float:
    """2 * (output or output-gradient elements) * kh * kw * C_in."""
    if kind == "fwd":  # (x, w, b) -> y
        y, w = outs[0], ins[1]
    elif kind == "bwd_data":  # (g, w) -> dx
        y, w = ins[0], ins[1]
    else:  # bwd_weights: (x, g) -> (dw, db)
        y, w = ins[1], outs[0]
    return 2.0 * math.prod(y) * math.prod(w[-4:-1])


def _lstm_call_flops(kind: str, ins, outs) -> float:
    """The gate matmuls: forward 2 * T * N * (C + H) * 4H; backward twice that (dx and dh, dW)."""
    (t, n, c), h = ins[0][-3:], ins[4][-2]
    fwd = 2.0 * t * n * (c + h) * 4 * h
    return fwd if kind == "fwd" else 2 * fwd


def _attention_call_flops(kind: str, ins, outs) -> float:
    """Two (Sq, D) x (D, Sk) matmuls per (batch, head) forward, five backward (the full score
    matrix: causal calls skip about half)."""
    (b, sq, h, d), sk = ins[0], ins[1][1]
    return 2.0 * b * h * sq * sk * d * (2 if kind == "fwd" else 5)


_FLOPS = {  # custom-call family (the target's middle) -> its FLOP count
    "onednn_conv": _conv_call_flops,
    "onednn_lstm": _lstm_call_flops,
    "cpu_attn": _attention_call_flops,
}


def native_flops(module_text: str) -> float:
    """FLOPs of the native calls (oneDNN convs and LSTM layers, attention) in a lowered
    (StableHLO) module's text, which XLA's cost analysis counts as 0. A call under a sequential
    vmap loop counts once."""
    total = 0.0
    for line in module_text.splitlines():
        if m := _CALL.search(line):
            op, kind, ins, outs = m.group(1), m.group(2), _shapes(m.group(3)), _shapes(m.group(4))
            total += _FLOPS[op](kind, ins, outs)
    return total


def describe() -> str:
    """The platform line's conv backend: 'oneDNN 3.2.0' or 'XLA (why oneDNN is not used)'."""
    if library.available():
        return f"oneDNN {library.onednn_version()}"
    return f"XLA ({library.why_unavailable()})"
