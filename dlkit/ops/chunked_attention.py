"""Memory-efficient attention in plain JAX: online softmax over key blocks, recomputed backward.

Forward: for each key block j (a `lax.scan` step), with running max m, normaliser l and output o,
  s = q k_j^T * scale, m' = max(m, rowmax s), l = l e^(m-m') + rowsum e^(s-m'),
  o = o e^(m-m') + e^(s-m') v_j;  out = o / l, lse = m + log l.
Backward (a `jax.custom_vjp`, as FlashAttention-2): p_j = e^(s_j - lse) is recomputed per block,
  dv_j = p_j^T dO, ds_j = p_j (dO v_j^T - rowsum(dO * out)),
  dq += ds_j k_j scale, dk_j = ds_j^T q scale.
Only (B, H, Sq, block) scores live at a time, so memory grows linearly with the key length.
Masks follow `dlkit.ops.attention` (mask, causal top-left or bottom-right, segment_ids, kv_lengths;
empty rows give zeros). Inside, `offset` is the d of `causal_offset` (None: not causal).
"""

import functools

import jax
import jax.numpy as jnp

from dlkit.ops.attention import causal_offset, check_qkv, split_segment_ids

DEFAULT_BLOCK_K = 512


def _check_mask(mask, b: int, h: int, sq: int, sk: int):
    """Boolean mask as (1 or B, 1 or H, Sq, Sk); errors name the shapes."""
    mask = jnp.asarray(mask, bool)
    if mask.ndim != 4:
        raise ValueError(f"attention: mask must broadcast to (B, H, Sq, Sk), got {mask.shape}")
    mb, mh, mq, mk = mask.shape
    if mb not in (1, b) or mh not in (1, h) or mq not in (1, sq) or mk not in (1, sk):
        raise ValueError(
            f"attention: mask {mask.shape} does not broadcast to (B, H, Sq, Sk) = {(b, h, sq, sk)}"
        )
    return jnp.broadcast_to(mask, (mb, mh, mq, sk))  # a (.., 1, Sk) key mask stays linear


def _block_mask(j, aux, *, offset: int | None, block: int, sk: int, sq: int, hkv: int):
    """Visibility of key block j, broadcastable to (B, Hkv, G, Sq, block); causal: j <= i + d."""
    mask, q_ids, kv_ids, kv_lengths = aux
    kpos = j * block + jnp.arange(block)  # (block,)
    vis = (kpos < sk)[None, None, None, None, :]
    if offset is not None:
        vis = vis & (jnp.arange(sq)[:, None] + offset >= kpos[None, :])[None, None, None]
    if q_ids is not None:
        kv_blk = jax.lax.dynamic_slice_in_dim(kv_ids, j * block, block, axis=1)  # (B, block)
        vis = vis & (q_ids[:, :, None] == kv_blk[:, None, :])[:, None, None]
    if kv_lengths is not None:
        vis = vis & (kpos[None, :] < kv_lengths[:, None])[:, None, None, None, :]
    if mask is not None:
        m = jax.lax.dynamic_slice_in_dim(mask, j * block, block, axis=3)  # (mb, mh, mq, block)
        mb, mh, mq = m.shape[:3]
        m = m[:, :, None] if mh == 1 else m.reshape(mb, hkv, mh // hkv, mq, block)
        vis = vis & m
    return vis


def _blocks(x, block: int):
    """(B, Sk, Hkv, D) -> (Sk / block, B, block, Hkv, D) for scanning."""
    b, s, hkv, d = x.shape
    return jnp.moveaxis(x.reshape(b, s // block, block, hkv, d), 1, 0)


def _scores(qg, kb, scale):
    """s = q k^T * scale in float32; qg (B,Hkv,G,Sq,D), kb (B,block,Hkv,D) -> (B,Hkv,G,Sq,block)."""
    return jnp.einsum("bhgqd,bkhd->bhgqk", qg, kb, preferred_element_type=jnp.float32) * scale


def _forward(q, k, v, aux, offset, scale, block, sk):
    """Online-softmax scan; returns out (B,Hkv,G,Sq,D) float32 and lse (B,Hkv,G,Sq)."""
    b, sq, h, d = q.shape
    hkv = k.shape[2]
    qg = jnp.moveaxis(q.reshape(b, sq, hkv, h // hkv, d), 1, 3)  # (B, Hkv, G, Sq, D)
    mask_of = functools.partial(_block_mask, offset=offset, block=block, sk=sk, sq=sq, hkv=hkv)

    def body(carry, xs):
        o, m, norm = carry
        j, kb, vb = xs
        s = jnp.where(mask_of(j, aux), _scores(qg, kb, scale), -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        corr = jnp.exp(m - m_safe)
        norm = norm * corr + p.sum(-1)
        pv = jnp.einsum("bhgqk,bkhd->bhgqd", p, vb.astype(jnp.float32))
        return (o * corr[..., None] + pv, m_new, norm), None

    stats = qg.shape[:4]
    init = (jnp.zeros(qg.shape, jnp.float32), jnp.full(stats, -jnp.inf), jnp.zeros(stats))
    xs = (jnp.arange(k.shape[1] // block), _blocks(k, block), _blocks(v, block))
    (o, m, norm), _ = jax.lax.scan(body, init, xs)
    safe = jnp.where(norm == 0, 1.0, norm)
    return o / safe[..., None], jnp.where(norm == 0, -jnp.inf, m + jnp.log(safe))


def _to_bshd(x, dtype):
    """(B, Hkv, G, Sq, D) -> (B, Sq, H, D)."""
    b, hkv, g, sq, d = x.shape
    return jnp.moveaxis(x, 3, 1).reshape(b, sq, hkv * g, d).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _chunked(q, k, v, aux, offset, scale, block, sk):
    return _to_bshd(_forward(q, k, v, aux, offset, scale, block, sk)[0], q.dtype)


def _chunked_fwd(q, k, v, aux, offset, scale, block, sk):
    out, lse = _forward(q, k, v, aux, offset, scale, block, sk)
    return _to_bshd(out, q.dtype), (q, k, v, aux, out, lse)


def _chunked_bwd(offset, scale, block, sk, res, g):
    q, k, v, aux, out, lse = res
    b, sq, h, d = q.shape
    hkv = k.shape[2]
    qg = jnp.moveaxis(q.reshape(b, sq, hkv, h // hkv, d), 1, 3)  # (B, Hkv, G, Sq, D)
    do = jnp.moveaxis(g.reshape(b, sq, hkv, h // hkv, d), 1, 3).astype(jnp.float32)
    delta = jnp.sum(do * out, -1)  # (B, Hkv, G, Sq)
    lse = jnp.where(jnp.isfinite(lse), lse, 0.0)
    mask_of = functools.partial(_block_mask, offset=offset, block=block, sk=sk, sq=sq, hkv=hkv)

    def body(dq, xs):
        j, kb, vb = xs
        vis = mask_of(j, aux)
        p = jnp.where(vis, jnp.exp(_scores(qg, kb, scale) - lse[..., None]), 0.0)
        dv = jnp.einsum("bhgqk,bhgqd->bkhd", p, do)
        dp = jnp.einsum("bhgqd,bkhd->bhgqk", do, vb.astype(jnp.float32))
        ds = p * (dp - delta[..., None]) * scale
        dq = dq + jnp.einsum("bhgqk,bkhd->bhgqd", ds, kb.astype(jnp.float32))
        dk = jnp.einsum("bhgqk,bhgqd->bkhd", ds, qg.astype(jnp.float32))
        return dq, (dk, dv)

    xs = (jnp.arange(k.shape[1] // block), _blocks(k, block), _blocks(v, block))
    dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(qg.shape, jnp.float32), xs)

    def unblock(x):  # (NB, B, block, Hkv, D) -> (B, Sk, Hkv, D)
        return jnp.moveaxis(x, 0, 1).reshape(k.shape).astype(k.dtype)

    aux_ct = jax.tree.map(lambda _: None, aux)
    return _to_bshd(dq, q.dtype), unblock(dk), unblock(dv), aux_ct


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_attention(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    segment_ids=None,
    kv_lengths=None,
    scale=None,
    block_k: int = DEFAULT_BLOCK_K,
):
    """softmax(q k^T * scale, masked) v by key blocks; q (B,Sq,H,D), k/v (B,Sk,Hkv,D)."""
    check_qkv(q, k, v)
    b, sq, h, d = q.shape
    sk = k.shape[1]
    if block_k < 1:
        raise ValueError(f"chunked attention: block_k must be >= 1, got {block_k}")
    scale = d**-0.5 if scale is None else float(scale)
    q_ids, kv_ids = split_segment_ids(segment_ids, sq, sk)
    if mask is not None:
        mask = _check_mask(mask, b, h, sq, sk)
    if kv_lengths is not None:
        kv_lengths = jnp.asarray(kv_lengths)
        if kv_lengths.shape != (b,):
            raise ValueError(f"attention: kv_lengths must be (B,) = ({b},), got {kv_lengths.shape}")
    block = min(block_k, sk)
    pad = -sk % block
    if pad:
        k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (k, v))
        kv_ids = None if kv_ids is None else jnp.pad(kv_ids, ((0, 0), (0, pad)))
        mask = None if mask is None else jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, pad)))
    offset = causal_offset(causal, sq, sk)
    return _chunked(q, k, v, (mask, q_ids, kv_ids, kv_lengths), offset, scale, block, sk)
