"""Transformers: the pre-LayerNorm block, an encoder classifier and a decoder-only language model.

`transformer_lm` (tokens (B, T) -> logits (B, T, V)) implements the sampling contract of
dlkit.nn.sampling with a KV cache: `init_carry(batch_size, max_len)` and
`step(carry, tokens (B,)) -> (carry, logits (B, V))`; `hidden_states` is the contextual probe.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlkit import errors
from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.dropout import Dropout
from dlkit.nn.positional import POSITIONAL, LearnedPositions, SinusoidalPositions
from dlkit.ops import get_activation


class FeedForward(nn.Module):
    """W_2 act(W_1 x + b_1) + b_2 with dropout; x (..., E) -> (..., E)."""

    hidden: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, *, train=False):
        h = get_activation(self.activation)(nn.Dense(self.hidden, dtype=self.dtype, name="up")(x))
        h = nn.Dense(x.shape[-1], dtype=self.dtype, name="down")(h)
        return Dropout(self.dropout_rate, deterministic=not train)(h)


class TransformerBlock(nn.Module):
    """x + MHA(LN(x)), then x + FFN(LN(x)) (pre-LayerNorm); x (B, T, E) -> (B, T, E)."""

    num_heads: int
    mlp_dim: int
    num_kv_heads: int | None = None
    dropout_rate: float = 0.0
    activation: str = "gelu"
    implementation: str = "auto"
    rope: bool = False
    dtype: jnp.dtype | None = None
    layer_norm_epsilon: float = 1e-6  # flax's default; PyTorch / GPT-2 use 1e-5

    @nn.compact
    def __call__(self, x, *, train=False, cache=None, **attn_kw):
        """attn_kw: causal, mask, segment_ids, kv_lengths, positions; cache -> (x, new cache)."""
        attn = MultiHeadAttention(
            self.num_heads,
            self.num_kv_heads,
            dropout_rate=self.dropout_rate,
            implementation=self.implementation,
            rope=self.rope,
            dtype=self.dtype,
            name="attention",
        )
        h = attn(
            nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_attn")(x),
            cache=cache,
            train=train,
            **attn_kw,
        )
        if cache is not None:
            h, cache = h
        x = x + h
        ffn = FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype, name="mlp")
        ln = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_mlp")
        x = x + ffn(ln(x), train=train)
        return x if cache is None else (x, cache)


def _check_positional(name: str) -> None:
    errors.choose({p: p for p in POSITIONAL}, name, "positional encoding")


class TransformerLM(nn.Module):
    """logits = head(LN(blocks(embed(x) + pos))) with causal attention; tokens (B,T) -> (B,T,V).

    `tie_embeddings` computes logits as h E^T with the input embedding E (no separate head).
    GPT-2 / nanoGPT weights (dlkit.convert.from_torch) need `layer_norm_epsilon=1e-5` and
    `activation="gelu"` (GPT-2's tanh GELU) or `"gelu_exact"` (nanoGPT's nn.GELU());
    dlkit.convert.load_pretrained reads them from a Hugging Face folder or a nanoGPT ckpt.pt.
    """

    num_classes: int
    embed_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_dim: int | None = None
    max_len: int = 256
    dropout_rate: float = 0.0
    positional: str = "learned"
    tie_embeddings: bool = False
    implementation: str = "auto"
    dtype: jnp.dtype | None = None
    activation: str = "gelu"
    layer_norm_epsilon: float = 1e-6

    def setup(self):
        _check_positional(self.positional)
        self.embed = nn.Embed(self.num_classes, self.embed_dim, name="embed")
        if self.positional == "learned":
            self.pos = LearnedPositions(self.max_len, name="pos")
        elif self.positional == "sinusoidal":
            self.pos = SinusoidalPositions(name="pos")
        self.blocks = [
            TransformerBlock(
                self.num_heads,
                self.mlp_dim or 4 * self.embed_dim,
                self.num_kv_heads,
                self.dropout_rate,
                activation=self.activation,
                implementation=self.implementation,
                rope=self.positional == "rope",
                dtype=self.dtype,
                layer_norm_epsilon=self.layer_norm_epsilon,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.drop = Dropout(self.dropout_rate)
        self.norm = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_final")
        if not self.tie_embeddings:
            self.head = nn.Dense(self.num_classes, dtype=self.dtype, name="head")

    def _embed(self, tokens, positions, train):
        x = self.embed(tokens)  # (B, T, E)
        if self.positional in ("learned", "sinusoidal"):
            x = self.pos(x, positions)
        return self.drop(x, deterministic=not train)

    def _logits(self, h):
        return self.embed.attend(h) if self.tie_embeddings else self.head(h)

    def hidden_states(self, tokens, *, train=False, segment_ids=None):
        """Per-token vectors after the embedding and after each block (last one final-normed).

        tokens (B, T) -> list of num_layers + 1 arrays (B, T, E).
        """
        if tokens.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects tokens (B, T), got {tokens.shape}")
        if tokens.shape[1] > self.max_len and self.positional == "learned":
            raise ValueError(f"tokens {tokens.shape} are longer than max_len={self.max_len}")
        x = self._embed(tokens, None, train)
        states = [x]
        for block in self.blocks:
            x = block(x, causal=True, segment_ids=segment_ids, train=train)
            states.append(x)
        states[-1] = self.norm(x)
        return states

    def __call__(self, tokens, *, train=False, segment_ids=None):
        """tokens (B, T) int -> logits (B, T, V); segment_ids (B, T) keep packed documents apart."""
        return self._logits(self.hidden_states(tokens, train=train, segment_ids=segment_ids)[-1])

    def init_carry(self, batch_size: int, max_len: int):
        """Empty KV cache: per layer (k, v) zeros (B, max_len, Hkv, D), and the next position."""
        if max_len > self.max_len and self.positional == "learned":
            raise ValueError(f"cache length {max_len} exceeds the model's max_len={self.max_len}")
        heads = self.num_kv_heads or self.num_heads
        shape = (batch_size, max_len, heads, self.embed_dim // self.num_heads)
        zeros = jnp.zeros(shape, self.dtype or jnp.float32)
        return {
            "index": jnp.zeros((), jnp.int32),
            "layers": tuple((zeros, zeros) for _ in self.blocks),
        }

    def step(self, carry, tokens):
        """Feeds one token per row at position carry["index"]: tokens (B,) -> (carry, logits (B,V)).

        Positions past the cache length are not checked inside jit (the write would clamp).
        """
        if tokens.ndim != 1:
            raise ValueError(f"step expects tokens (B,), got {tokens.shape}")
        index = carry["index"]
        x = self._embed(tokens[:, None], index[None, None], False)  # (B, 1, E)
        layers = []
        for block, (k, v) in zip(self.blocks, carry["layers"], strict=True):
            x, (k, v, _) = block(x, cache=(k, v, index))
            layers.append((k, v))
        logits = self._logits(self.norm(x))[:, 0]
        return {"index": index + 1, "layers": tuple(layers)}, logits


class TransformerClassifier(nn.Module):
    """logits = W mean_t LN(blocks(embed(x) + pos))_t, bidirectional; inputs -> (B, num_classes).

    Integer tokens (B, T) are embedded (`vocab_size` needed; `pad_id` keys are masked and left out
    of the mean); float inputs (B, T, F) or images (B, H, W, C) (rows as tokens) are projected.
    """

    num_classes: int
    vocab_size: int | None = None
    pad_id: int | None = None
    embed_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int | None = None
    max_len: int = 512
    dropout_rate: float = 0.0
    implementation: str = "auto"
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, inputs, *, train=False):
        mask, keep = None, None
        if jnp.issubdtype(inputs.dtype, jnp.integer):
            if self.vocab_size is None:
                raise errors.ConfigError("transformer_classifier on tokens needs model.vocab_size")
            x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(inputs)
            if self.pad_id is not None:
                keep = inputs != self.pad_id  # (B, T)
                mask = keep[:, None, None, :]
        else:
            x = inputs.reshape(inputs.shape[0], inputs.shape[1], -1) if inputs.ndim > 2 else inputs
            x = x[..., None] if x.ndim == 2 else x
            x = nn.Dense(self.embed_dim, dtype=self.dtype, name="project")(x)
        x = LearnedPositions(self.max_len, name="pos")(x)
        x = Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = TransformerBlock(
                self.num_heads,
                self.mlp_dim or 4 * self.embed_dim,
                dropout_rate=self.dropout_rate,
                implementation=self.implementation,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, mask=mask, train=train)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
        if keep is None:
            pooled = x.mean(axis=1)
        else:
            w = keep[..., None].astype(x.dtype)
            pooled = (x * w).sum(1) / jnp.maximum(w.sum(1), 1)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled)


def contextual_embeddings(model, variables, tokens: jax.Array, layer: int = -1) -> jax.Array:
    """The probe: per-token hidden vectors (B, T, E) of `layer` (0 = embeddings, -1 = final)."""
    return model.apply(variables, tokens, method="hidden_states")[layer]


def attention_weights(model, variables, inputs, **kwargs) -> list[jax.Array]:
    """softmax(q k^T / sqrt(d)) of every layer, in order: a list of (B, H, Tq, Tk) arrays."""
    _, state = model.apply(variables, inputs, mutable=["intermediates"], **kwargs)
    found = []

    def walk(tree, path):
        for key in sorted(tree, key=lambda k: (len(k), k)):  # block_2 before block_10
            if key == "attention_weights":
                found.append((path, tree[key][0]))
            elif isinstance(tree[key], dict):
                walk(tree[key], path + (key,))

    walk(state.get("intermediates", {}), ())
    return [w for _, w in found]


def probe_sentence(model, variables, tokenizer, sentence: str, layer: int = -1, pool=None):
    """Per-token vectors of a trained LM for `sentence`: (tokens, (T, E) numpy array).

    model, variables, tokenizer: e.g. `dlkit.train.load.load_language_model(workdir)`.

    pool="last" or "mean" turns a character model's vectors into one per word (words as the
    word tokenizer splits them; "last" = the vector after the word's last character).
    """
    ids = tokenizer.encode(sentence)
    if ids.size == 0:
        raise ValueError(f"sentence {sentence!r} has no tokens")
    vectors = np.asarray(contextual_embeddings(model, variables, jnp.asarray(ids)[None], layer)[0])
    if pool is None:
        return [tokenizer.vocab[i] for i in ids], vectors
    if tokenizer.kind != "char" or pool not in ("last", "mean"):
        raise ValueError(f"pool={pool!r} needs a char tokenizer and 'last' or 'mean'")
    spans = [m.span() for m in re.finditer(r"[A-Za-z0-9_']+|[^\sA-Za-z0-9_']", sentence)]
    words = [sentence[a:b] for a, b in spans]
    pooled = [vectors[b - 1] if pool == "last" else vectors[a:b].mean(0) for a, b in spans]
    return words, np.stack(pooled)


MODELS = {"transformer_lm": TransformerLM, "transformer_classifier": TransformerClassifier}
