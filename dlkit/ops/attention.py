"""Scaled dot-product attention: the mask semantics and the written-out reference.

Layout everywhere: q (B, Sq, H, D), k and v (B, Sk, Hkv, D) with H % Hkv == 0 (grouped-query heads),
the same as `jax.nn.dot_product_attention`. Masks compose (all must allow a pair):
- `mask`: boolean, broadcastable to (B, H, Sq, Sk), True = may attend;
- `causal`: query i sees key j iff j <= i (top-left aligned, as jax.nn.dot_product_attention);
- `segment_ids`: (B, S) when Sq == Sk, or a pair ((B, Sq), (B, Sk)); equal ids attend (packing);
- `kv_lengths`: (B,) ints; key j is visible iff j < kv_lengths[b] (padding).
A query row with no visible key returns zeros, never NaN.
"""

import importlib.util

import jax
import jax.numpy as jnp


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
        raise ValueError(f"attention: dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")


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
    if causal:
        out = both(out, jnp.tril(jnp.ones((sq, sk), bool))[None, None])
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


IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "chunked", "pallas")
# CPU: above this many score bytes (B * H * Sq * Sk * 4) "auto" streams keys ("chunked"): it is
# also faster there (benchmarks/attention_memory.py --speed; RESULTS.md).
CHUNKED_SCORE_BYTES = 8 * 2**20


def pallas_available() -> bool:
    """True when the Pallas flash kernel (dlkit.kernels.flash_attention) is importable."""
    return importlib.util.find_spec("dlkit.kernels.flash_attention") is not None


def _cudnn_eligible(q, k, mask, segment_ids) -> bool:
    """cuDNN flash attention: GPU sm80+, fp16/bf16, head_dim % 8 == 0 and <= 128, no mask arrays."""
    dev = jax.devices()[0]
    cc = float(getattr(dev, "compute_capability", "0") or 0)
    return (
        cc >= 8.0
        and mask is None
        and segment_ids is None
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 128
    )


def choose_implementation(q, k, *, mask=None, segment_ids=None, platform=None) -> str:
    """Name of the backend "auto" uses for these shapes and dtype on `platform` (default: jax's)."""
    platform = platform or jax.default_backend()
    if platform == "gpu":
        if _cudnn_eligible(q, k, mask, segment_ids):
            return "cudnn"
        return "pallas" if mask is None and pallas_available() and k.shape[1] >= 1024 else "xla"
    if platform != "cpu":  # TPU etc.: dlkit's Pallas kernel targets GPUs (interprets elsewhere)
        return "xla"
    b, sq, h, _ = q.shape
    return "chunked" if b * h * sq * k.shape[1] * 4 > CHUNKED_SCORE_BYTES else "xla"


def _zero_empty_rows(out, m):
    """Rows of out (B,Sq,H,D) whose mask m (b,h,Sq,Sk) has no visible key become exact zeros."""
    if m is None:
        return out
    visible = jnp.moveaxis(jnp.any(m, axis=-1), 1, 2)[..., None]  # (b, Sq, h, 1)
    return jnp.where(visible, out, jnp.zeros((), out.dtype))


def _jax_nn(q, k, v, *, mask, causal, segment_ids, kv_lengths, scale, implementation):
    """jax.nn.dot_product_attention ("xla" or "cudnn") with dlkit's masks and empty-row zeros."""
    if implementation == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(
            f"attention implementation 'cudnn' needs a GPU (backend is {jax.default_backend()!r}); "
            "use 'xla', 'chunked' or 'auto'"
        )
    b, sq = q.shape[:2]
    sk = k.shape[1]
    m = attention_mask(b, sq, sk, mask=mask, segment_ids=segment_ids)
    lengths = None if kv_lengths is None else jnp.asarray(kv_lengths, jnp.int32)
    if lengths is not None and lengths.shape != (b,):
        raise ValueError(f"attention: kv_lengths must be (B,) = ({b},), got {lengths.shape}")
    out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=m,
        scale=scale,
        is_causal=causal,
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    if m is None and lengths is None:
        return out  # causal alone never empties a row (key 0 is always visible)
    full = attention_mask(
        b, sq, sk, mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=lengths
    )
    return _zero_empty_rows(out, full)


def _pallas(q, k, v, *, mask, causal, segment_ids, kv_lengths, scale):
    """The Pallas flash-attention kernel (dlkit.kernels); it takes no arbitrary boolean mask."""
    if mask is not None:
        raise ValueError(
            "attention implementation 'pallas' takes causal/segment_ids/kv_lengths but no "
            "arbitrary mask; use implementation='chunked' or 'xla' for a boolean mask"
        )
    if not pallas_available():
        raise ValueError("attention implementation 'pallas' needs dlkit/kernels/flash_attention.py")
    from dlkit.kernels.flash_attention import flash_attention

    return flash_attention(
        q, k, v, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, scale=scale
    )


def dot_product_attention(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    segment_ids=None,
    kv_lengths=None,
    scale=None,
    implementation="auto",
    return_choice=False,
):
    """out = softmax(q k^T * scale, masked) v; q (B,Sq,H,D), k/v (B,Sk,Hkv,D) -> (B,Sq,H,D).

    `implementation` is one of IMPLEMENTATIONS; "auto" uses `choose_implementation`, and
    `return_choice=True` returns (out, name of the backend used).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose one of: "
            f"{', '.join(IMPLEMENTATIONS)}"
        )
    check_qkv(q, k, v)
    name = implementation
    if name == "auto":
        name = choose_implementation(q, k, mask=mask, segment_ids=segment_ids)
    kw = dict(mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, scale=scale)
    if name == "reference":
        out = attention_reference(q, k, v, **kw)
    elif name == "chunked":
        from dlkit.ops.chunked_attention import chunked_attention

        out = chunked_attention(q, k, v, **kw)
    elif name == "pallas":
        out = _pallas(q, k, v, **kw)
    else:
        out = _jax_nn(q, k, v, implementation=name, **kw)
    return (out, name) if return_choice else out
