"""Multi-head attention over `dlkit.ops.dot_product_attention`, with a KV cache for decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlkit.nn.positional import apply_rotary, default_positions
from dlkit.ops.attention import IMPLEMENTATIONS, attention_reference, dot_product_attention


def check_implementation(name: str) -> None:
    """Bad backend names in a config raise ConfigError listing the choices."""
    from dlkit.errors import ConfigError

    if name not in IMPLEMENTATIONS:
        raise ConfigError(
            f"unknown attention implementation {name!r}; choose one of: "
            f"{', '.join(IMPLEMENTATIONS)}"
        )


def update_cache(cache, k, v):
    """Writes k, v (B, T, Hkv, D) at cache index; cache = (k (B,L,Hkv,D), v, index ())."""
    k_cache, v_cache, index = cache
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
    return k_cache, v_cache, index + k.shape[1]


class MultiHeadAttention(nn.Module):
    """out = W_o [attention(x W_q^h, c W_k^h, c W_v^h)]_h; x (B,Tq,E), context c (B,Tk,E) or x.

    `num_kv_heads` < `num_heads` gives grouped-query attention; `rope` rotates q and k by position;
    `implementation` is the `dot_product_attention` backend. Dropout is applied to the output
    (fused backends never form the weights). When the "intermediates" collection is mutable the
    weights are computed by the reference and sown as `attention_weights` (B, H, Tq, Tk).
    """

    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    implementation: str = "auto"
    rope: bool = False
    rope_base: float = 10000.0
    use_bias: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(
        self,
        x,
        context=None,
        *,
        causal=False,
        mask=None,
        segment_ids=None,
        kv_lengths=None,
        positions=None,
        kv_positions=None,
        cache=None,
        train=False,
    ):
        """(B, Tq, E) -> (B, Tq, out_features or E); with `cache` returns (out, new cache)."""
        check_implementation(self.implementation)
        kv_heads = self.num_kv_heads or self.num_heads
        if self.num_heads % kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={kv_heads}"
            )
        features = x.shape[-1]
        head_dim = self.head_dim or features // self.num_heads
        context = x if context is None else context
        dense = lambda n, name: nn.DenseGeneral(  # noqa: E731
            (n, head_dim), use_bias=self.use_bias, dtype=self.dtype, name=name
        )
        q = dense(self.num_heads, "query")(x)  # (B, Tq, H, D)
        k = dense(kv_heads, "key")(context)  # (B, Tk, Hkv, D)
        v = dense(kv_heads, "value")(context)
        offset = 0 if cache is None else cache[2]
        if self.rope:
            q_pos = default_positions(x, offset) if positions is None else positions
            q = apply_rotary(q, q_pos, self.rope_base)
            kv_pos = default_positions(context, offset) if kv_positions is None else kv_positions
            k = apply_rotary(k, kv_pos, self.rope_base)
        impl = self.implementation
        if cache is not None:  # query i (absolute offset + i) sees cached keys j <= offset + i
            cache = update_cache(cache, k, v)
            k, v = cache[0], cache[1]
            qpos = offset + jnp.arange(q.shape[1])
            mask = (jnp.arange(k.shape[1])[None, :] <= qpos[:, None])[None, None]
            causal, impl = False, "xla" if impl in ("pallas", "cudnn") else impl
        kw = dict(mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths)
        if self.is_mutable_collection("intermediates"):
            out, weights = attention_reference(q, k, v, return_weights=True, **kw)
            self.sow("intermediates", "attention_weights", weights)
        else:
            out = dot_product_attention(q, k, v, implementation=impl, **kw)
        out = nn.DenseGeneral(
            self.out_features or features,
            axis=(-2, -1),
            use_bias=self.use_bias,
            dtype=self.dtype,
            name="out",
        )(out)
        out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        return out if cache is None else (out, cache)
