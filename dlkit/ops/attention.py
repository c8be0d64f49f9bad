"""Scaled dot-product attention: the argument contract, the mask semantics and the reference.

This module is the bottom of attention: it imports no other dlkit module but errors. The chunked
backend (dlkit.ops.chunked_attention), the Pallas kernel (dlkit.kernels) and the dispatcher
(dlkit.ops.attention_dispatch, exported as dlkit.ops.dot_product_attention) build on it.

Layout everywhere: q (B, Sq, H, D), k and v (B, Sk, Hkv, D) with H % Hkv == 0 (grouped-query heads),
the same as `jax.nn.dot_product_attention`; q, k, v share one floating dtype. Masks compose (all
must allow a pair):
- `mask`: boolean, broadcastable to (B, H, Sq, Sk), True = may attend;
- `causal`: False, True or "top_left": query i sees key j iff j <= i (as jax.nn and PyTorch SDPA);
  "bottom_right": j <= i + Sk - Sq, the last query sees every key (FlashAttention-2, decoding with
  a KV cache); both are the same when Sq == Sk. Bottom-right with Sq > Sk leaves the first
  Sq - Sk rows without keys;
- `segment_ids`: (B, S) when Sq == Sk, or a pair ((B, Sq), (B, Sk)); equal ids attend (packing);
- `kv_lengths`: (B,) ints; key j is visible iff j < kv_lengths[b] (padding).
A query row with no visible key returns zeros, never NaN.
"""

import jax
import jax.numpy as jnp

from dlkit import errors

# causal argument -> its alignment (None: not causal)
CAUSAL = {False: None, None: None, True: "top_left", "top_left": "top_left"}
CAUSAL |= {"bottom_right": "bottom_right"}


def causal_alignment(causal) -> str | None:
    """None, "top_left" or "bottom_right" for a `causal` argument; ConfigError for anything else."""
    return errors.choose(CAUSAL, causal, "causal alignment")


def causal_offset(causal, sq: int, sk: int) -> int | None:
    """None if not causal, else d such that query i sees key j iff j <= i + d (0 or Sk - Sq)."""
    align = causal_alignment(causal)
    if align is None:
        return None
    return 0 if align == "top_left" else sk - sq


def check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    """Fails fast, naming the shapes, unless q (B,Sq,H,D), k/v (B,Sk,Hkv,D) with H % Hkv == 0."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects rank-4 (batch, seq, heads, head_dim); got q {q.shape}, "
            f"k {k.shape}, v {v.shape}"
        )
    if k.shape != v.shape:
        raise ValueError(f"attention: k {k.shape} and v {v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"attention: batch and head_dim of q {q.shape} must match k {k.shape} (B, S, H, D)"
        )
    if q.shape[2] % k.shape[2]:
        raise ValueError(
            f"attention: {q.shape[2]} query heads are not a multiple of {k.shape[2]} KV heads "
            f"(q {q.shape}, k {k.shape})"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"attention: dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}; cast them to one "
            "floating dtype"
        )
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError(
            f"attention needs floating q, k, v; got {q.dtype} for q {q.shape}, k {k.shape}, "
            f"v {v.shape} (cast with .astype(jnp.float32))"
        )


def split_segment_ids(segment_ids, sq: int, sk: int):
    """Returns (q_ids (B, Sq), kv_ids (B, Sk)) from one (B, S) array or a pair."""
    if segment_ids is None:
        return None, None
    if isinstance(segment_ids, tuple | list):
        q_ids, kv_ids = segment_ids
    else:
        if sq != sk:
            raise ValueError(
                f"attention: one segment_ids array {segment_ids.shape} needs Sq == Sk (got {sq}, "
                f"{sk}); pass a pair (q_segment_ids, kv_segment_ids)"
            )
        q_ids = kv_ids = segment_ids
    if q_ids.shape[-1] != sq or kv_ids.shape[-1] != sk:
        raise ValueError(
            f"attention: segment ids {q_ids.shape}, {kv_ids.shape} do not match Sq={sq}, Sk={sk}"
        )
    return q_ids, kv_ids


def attention_mask(
    batch: int, sq: int, sk: int, *, mask=None, causal=False, segment_ids=None, kv_lengths=None
):
    """Combines every mask kind into one boolean (B, 1 or H, Sq, Sk) array, or None if no mask."""
    out = None

    def both(a, b):
        return b if a is None else jnp.logical_and(a, b)

    if mask is not None:
        out = jnp.asarray(mask, bool)
        if out.ndim != 4:
            raise ValueError(f"attention: mask must broadcast to (B, H, Sq, Sk), got {out.shape}")
    offset = causal_offset(causal, sq, sk)
    if offset is not None:
        out = both(out, jnp.tril(jnp.ones((sq, sk), bool), k=offset)[None, None])
    q_ids, kv_ids = split_segment_ids(segment_ids, sq, sk)
    if q_ids is not None:
        out = both(out, (q_ids[:, :, None] == kv_ids[:, None, :])[:, None])
    if kv_lengths is not None:
        kv_lengths = jnp.asarray(kv_lengths)
        if kv_lengths.shape != (batch,):
            raise ValueError(
                f"attention: kv_lengths must be (B,) = ({batch},), got {kv_lengths.shape}"
            )
        out = both(out, (jnp.arange(sk)[None, :] < kv_lengths[:, None])[:, None, None, :])
    return out


def attention_reference(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    segment_ids=None,
    kv_lengths=None,
    scale=None,
    return_weights=False,
):
    """out = softmax(q k^T * scale, masked) v; q (B,Sq,H,D), k/v (B,Sk,Hkv,D) -> (B,Sq,H,D)."""
    check_qkv(q, k, v)
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    qg = q.reshape(b, sq, hkv, h // hkv, d)  # (B, Sq, Hkv, G, D)
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k).astype(jnp.float32) * scale
    logits = logits.reshape(b, h, sq, sk)
    m = attention_mask(
        b, sq, sk, mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths
    )
    if m is not None:
        logits = jnp.where(m, logits, -jnp.inf)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.exp(logits - jax.lax.stop_gradient(row_max))
    denom = jnp.sum(p, axis=-1, keepdims=True)
    weights = p / jnp.where(denom == 0, 1.0, denom)  # empty rows -> all-zero weights
    wg = weights.astype(v.dtype).reshape(b, hkv, h // hkv, sq, sk)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", wg, v).reshape(b, sq, h, d)
    return (out, weights) if return_weights else out


def attention_lse_reference(q, k, v, **kw):
    """log-sum-exp of the masked, scaled scores per query row, (B, H, Sq); -inf for empty rows."""
    check_qkv(q, k, v)
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = kw.pop("scale", None)
    scale = d**-0.5 if scale is None else scale
    kr = jnp.repeat(k, h // hkv, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, kr).astype(jnp.float32) * scale
    m = attention_mask(b, sq, sk, **kw)
    if m is not None:
        logits = jnp.where(m, logits, -jnp.inf)
    return jax.nn.logsumexp(logits, axis=-1)


def zero_empty_rows(out, m):
    """Rows of out (B,Sq,H,D) whose mask m (b,h,Sq,Sk) has no visible key become exact zeros."""
    if m is None:
        return out
    visible = jnp.moveaxis(jnp.any(m, axis=-1), 1, 2)[..., None]  # (b, Sq, h, 1)
    return jnp.where(visible, out, jnp.zeros((), out.dtype))
