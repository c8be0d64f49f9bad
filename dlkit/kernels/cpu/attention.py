"""Scaled dot-product attention as native CPU custom calls (attention.cc), with a custom VJP.

`attention(q, k, v, causal=, scale=)` has the contract of `dlkit.ops.attention_reference` for
float32 q (B, Sq, H, D), k and v (B, Sk, Hkv, D) without mask arrays (no `mask`, `segment_ids` or
`kv_lengths`): FlashAttention's math (online softmax, the weights recomputed in the backward from
the rows' log-sum-exp), so memory grows with S, not S^2. Equal to the reference to float tolerance;
bitwise equal for any thread count (one thread per (batch, head) task). Under `jax.vmap` the
calls run once per example (vmap_method="sequential").
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dlkit.kernels.cpu import library
from dlkit.ops.attention import causal_offset, check_qkv


def _call(target: str, results, cfg, *args):
    offset, scale, threads, width = cfg
    library.load()  # registers the targets (idempotent)
    call = jax.ffi.ffi_call(target, results, vmap_method="sequential")
    causal = np.int64(offset is not None)
    offset = np.int64(offset or 0)
    return call(
        *args,
        scale=np.float32(scale),
        causal=causal,
        offset=offset,
        threads=np.int64(threads),
        vector_width=np.int64(width),
    )


def _forward(q, k, v, cfg):
    b, sq, h, _ = q.shape
    results = [
        jax.ShapeDtypeStruct(q.shape, jnp.float32),
        jax.ShapeDtypeStruct((b, h, sq), jnp.float32),
    ]
    return _call("dlkit_cpu_attn_fwd", results, cfg, q, k, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, cfg):
    return _forward(q, k, v, cfg)[0]


def _attention_fwd(q, k, v, cfg):
    out, lse = _forward(q, k, v, cfg)
    return out, (q, k, v, out, lse)


def _attention_bwd(cfg, saved, g):
    q, k, v, out, lse = saved
    results = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (q, k, v)]
    return tuple(_call("dlkit_cpu_attn_bwd", results, cfg, q, k, v, out, lse, g))


_attention.defvjp(_attention_fwd, _attention_bwd)


def widest_vector() -> int:
    """The widest vectors (floats) the kernels run on this CPU: 16 (AVX-512F), 8 (AVX2 + FMA)
    or 4 (baseline x86-64); what vector_width=0 picks."""
    if not library.available():
        raise RuntimeError(
            f"dlkit.kernels.cpu.attention is unavailable: {library.why_unavailable()}"
        )
    return library.vector_width()


def attention(q, k, v, *, causal=False, scale=None, threads: int = 1, vector_width: int = 0):
    """softmax(q k^T * scale, causal?) v (B, Sq, H, D) for float32 q (B, Sq, H, D), k and v
    (B, Sk, Hkv, D); scale defaults to 1/sqrt(D); `threads` (batch, head) tasks at once;
    `vector_width` 16, 8 or 4 floats picks a kernel build (tests), 0 the widest the CPU runs."""
    widest = widest_vector()
    if vector_width not in (0, 4, 8, 16) or vector_width > widest:
        raise ValueError(
            f"cpu attention: vector_width={vector_width} is not one this CPU runs (4, 8 or 16 "
            f"up to {widest}; 0 picks the widest)"
        )
    check_qkv(q, k, v)
    if q.dtype != jnp.float32:
        raise ValueError(f"cpu attention needs float32 q, k, v; got {q.dtype} (cast, or use 'xla')")
    offset = causal_offset(causal, q.shape[1], k.shape[1])
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    return _attention(q, k, v, (offset, scale, int(threads), int(vector_width)))
