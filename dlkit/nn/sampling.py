"""Compiled text generation for any language model with `init_carry` / `step` (see ARCHITECTURE).

The prompt is fed with one `lax.scan`, then each new token is drawn from softmax(logits / T),
restricted to the top k, and fed back in a second `lax.scan`: one compiled call per generation.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax


def filter_logits(logits: jax.Array, temperature, top_k: int = 0) -> jax.Array:
    """logits / T with all but the k largest set to -inf (k = 0 keeps all); (B, V) -> (B, V)."""
    if top_k < 0 or top_k > logits.shape[-1]:
        raise ValueError(f"top_k must be in [0, {logits.shape[-1]}] (0 = off), got {top_k}")
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    if top_k:
        kth = lax.top_k(logits, top_k)[0][..., -1:]  # (B, 1)
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return logits


def sample_token(key, logits: jax.Array, temperature, top_k: int = 0) -> jax.Array:
    """One token per row from softmax(logits / T) over the top k; T = 0 is argmax; -> (B,) int32."""
    greedy = jnp.argmax(logits, axis=-1)
    drawn = jax.random.categorical(key, filter_logits(logits, temperature, top_k), axis=-1)
    return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "num_tokens", "top_k"))
def _generate(model, variables, prompt, key, temperature, num_tokens: int, top_k: int):
    batch, plen = prompt.shape
    carry = model.apply(variables, batch, plen + num_tokens, method="init_carry")

    def feed(c, tok):
        return model.apply(variables, c, tok, method="step")

    carry, logits = lax.scan(feed, carry, prompt.T)  # logits (P, B, V)

    def body(state, k):
        c, last = state
        tok = sample_token(k, last, temperature, top_k)
        c, nxt = feed(c, tok)
        return (c, nxt), tok

    _, toks = lax.scan(body, (carry, logits[-1]), jax.random.split(key, num_tokens))
    return toks.T  # (B, N)


def generate(
    model,
    variables,
    prompt,
    num_tokens: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
):
    """Continues prompt (B, P) int (P >= 1) by num_tokens sampled ids -> (B, num_tokens) int32."""
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(
            f"generate: prompt must be (B, P) token ids with P >= 1, got {prompt.shape}"
        )
    if num_tokens < 1:
        raise ValueError(f"generate: num_tokens must be >= 1, got {num_tokens}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0 (0 = greedy), got {temperature}")
    key = jax.random.key(seed)
    return _generate(model, variables, prompt, key, jnp.float32(temperature), num_tokens, top_k)


def generate_text(model, variables, tokenizer, prompt: str, num_chars: int, **kwargs) -> str:
    """prompt + num_chars generated tokens, decoded (kwargs: seed, temperature, top_k)."""
    ids = tokenizer.encode(prompt)
    if len(ids) == 0:
        raise ValueError("generate_text: the prompt is empty; give at least one character")
    out = generate(model, variables, ids[None], num_chars, **kwargs)
    return prompt + tokenizer.decode(out[0])
