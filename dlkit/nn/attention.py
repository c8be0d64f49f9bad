"""Multi-head attention over `dlkit.ops.dot_product_attention`, with a KV cache for decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlkit.errors import ConfigError
from dlkit.nn.dropout import Dropout
from dlkit.nn.positional import apply_rotary, default_positions
from dlkit.ops.attention import attention_reference
from dlkit.ops.attention_dispatch import check_implementation, dot_product_attention

MASKLESS = ("pallas", "cudnn", "cpu")  # backends that take no mask array


def check_cache_implementation(name: str) -> str:
    """A backend that can decode from a KV cache (it needs a mask array), or ConfigError."""
    check_implementation(name)
    if name in MASKLESS:
        raise ConfigError(
            f"cache_implementation {name!r} takes no mask array, which decoding from a KV cache "
            "needs; use 'auto', 'xla', 'chunked' or 'reference'"
        )
    return name


def update_cache(cache, k, v):
    """Writes k, v (B, T, Hkv, D) at cache index; cache = (k (B,L,Hkv,D), v, index ())."""
    k_cache, v_cache, index = cache
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
    return k_cache, v_cache, index + k.shape[1]


def cache_mask(index, tq: int, length: int, mask=None):
    """(1, 1, Tq, L) bool: query i (absolute index + i) sees cached keys j <= index + i; & mask."""
    visible = jnp.arange(length)[None, :] <= (index + jnp.arange(tq))[:, None]
    return visible[None, None] if mask is None else jnp.logical_and(visible, mask)


def rotate(q, k, q_pos, kv_pos, base: float):
    """Rotary positions applied to q (B,Tq,H,D) at q_pos and k (B,Tk,Hkv,D) at kv_pos."""
    return apply_rotary(q, q_pos, base), apply_rotary(k, kv_pos, base)


class MultiHeadAttention(nn.Module):
    """out = W_o [attention(x W_q^h, c W_k^h, c W_v^h)]_h; x (B,Tq,E), context c (B,Tk,E) or x.

    `num_kv_heads` < `num_heads` gives grouped-query attention; `rope` rotates q and k by position;
    `implementation` is the `dot_product_attention` backend without a cache. With a KV cache the
    mask comes from the cache index, so `cache_implementation` is used instead: 'pallas', 'cudnn'
    and 'cpu' take no mask array and are refused there. Dropout is applied to the output (fused
    backends never form the weights). When the "intermediates" collection is mutable the weights
    are computed by the reference and sown as `attention_weights` (B, H, Tq, Tk).
    """

    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    implementation: str = "auto"
    cache_implementation: str = "auto"
    rope: bool = False
    rope_base: float = 10000.0
    use_bias: bool = True
    dtype: jnp.dtype | None = None

    def _kv_heads(self) -> int:
        kv_heads = self.num_kv_heads or self.num_heads
        if self.num_heads % kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={kv_heads}"
            )
        return kv_heads

    def _project(self, x, context):
        """q (B,Tq,H,D), k and v (B,Tk,Hkv,D) from the query/key/value dense layers."""
        head_dim = self.head_dim or x.shape[-1] // self.num_heads

        def dense(n, name):
            return nn.DenseGeneral(
                (n, head_dim), use_bias=self.use_bias, dtype=self.dtype, name=name
            )

        kv_heads = self._kv_heads()
        return dense(self.num_heads, "query")(x), *(
            dense(kv_heads, n)(context) for n in ("key", "value")
        )

    def _attend(self, q, k, v, implementation, **masks):
        """dot_product_attention, or the reference with its weights sown when they are asked for."""
        if not self.is_mutable_collection("intermediates"):
            return dot_product_attention(q, k, v, implementation=implementation, **masks)
        out, weights = attention_reference(q, k, v, return_weights=True, **masks)
        self.sow("intermediates", "attention_weights", weights)
        return out

    @nn.compact
    def __call__(
        self, x, context=None, *, causal=False, mask=None, segment_ids=None, kv_lengths=None,
        positions=None, kv_positions=None, cache=None, train=False,
    ):  # fmt: skip
        """(B, Tq, E) -> (B, Tq, out_features or E); with `cache` returns (out, new cache)."""
        impl = check_implementation(self.implementation)
        context = x if context is None else context
        q, k, v = self._project(x, context)
        index = 0 if cache is None else cache[2]
        if self.rope:
            q_pos = default_positions(x, index) if positions is None else positions
            kv_pos = default_positions(context, index) if kv_positions is None else kv_positions
            q, k = rotate(q, k, q_pos, kv_pos, self.rope_base)
        if cache is not None:
            impl = check_cache_implementation(self.cache_implementation)
            cache = update_cache(cache, k, v)
            k, v = cache[:2]
            mask, causal = cache_mask(index, q.shape[1], k.shape[1], mask), False
        masks = dict(mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths)
        out = self._attend(q, k, v, impl, **masks)
        dense_out = nn.DenseGeneral(
            self.out_features or x.shape[-1], axis=(-2, -1), use_bias=self.use_bias,
            dtype=self.dtype, name="out",
        )  # fmt: skip
        out = Dropout(self.dropout_rate, deterministic=not train)(dense_out(out))
        return out if cache is None else (out, cache)
