"""The oneDNN conv as `dlkit.ops.conv2d`'s impl "onednn": which calls it takes, and per shard.

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

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from dlkit.kernels.cpu import conv, library


def _cores() -> int:
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(usable) if usable else os.cpu_count() or 1


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


def conv2d(x, w, stride=1, padding="SAME"):
    """conv(x, w) (B, Ho, Wo, C_out) through oneDNN, per batch shard under a context mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    axes = split_axes(mesh)
    if not axes:  # no mesh, one device, or already inside a shard_map over every axis
        return conv.conv2d(x, w, None, stride, padding, threads=_cores())
    n = _devices(mesh, axes)
    threads = max(1, _cores() // n)
    if x.shape[0] % n:
        return conv.conv2d(x, w, None, stride, padding, threads=threads)
    pads = conv.explicit_padding(padding, w.shape[:2], stride, x.shape[1:3])

    def one(xs, ws):
        return conv.conv2d(xs, ws, None, stride, pads, threads=threads)

    batch = PartitionSpec(axes)
    return jax.shard_map(
        one,
        mesh=mesh,
        in_specs=(batch, PartitionSpec()),
        out_specs=batch,
        axis_names=set(axes),
        check_vma=False,
    )(x, w)


_CALL = re.compile(r"stablehlo\.custom_call @dlkit_onednn_conv_(\w+)\(.*\} : \((.*)\) -> (.*)$")
_SHAPE = re.compile(r"tensor<((?:\d+x)*)f32>")


def _shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in m.split("x") if d) for m in _SHAPE.findall(text)]


def conv_flops(module_text: str) -> float:
    """FLOPs of the oneDNN conv calls in a lowered (StableHLO) module's text, which XLA's cost
    analysis counts as 0: 2 * (output or output-gradient elements) * kh * kw * C_in per call."""
    total = 0.0
    for line in module_text.splitlines():
        if not (m := _CALL.search(line)):
            continue
        kind, ins, outs = m.group(1), _shapes(m.group(2)), _shapes(m.group(3))
        if kind == "fwd":  # (x, w, b) -> y
            y, w = outs[0], ins[1]
        elif kind == "bwd_data":  # (g, w) -> dx
            y, w = ins[0], ins[1]
        else:  # bwd_weights: (x, g) -> (dw, db)
            y, w = ins[1], outs[0]
        total += 2.0 * math.prod(y) * math.prod(w[-4:-1])
    return total


def describe() -> str:
    """The platform line's conv backend: 'oneDNN 3.2.0' or 'XLA (why oneDNN is not used)'."""
    if library.available():
        return f"oneDNN {library.onednn_version()}"
    return f"XLA ({library.why_unavailable()})"
