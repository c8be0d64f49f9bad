"""Softmax, log-softmax, cross-entropy and accuracy."""

import jax
import jax.numpy as jnp


def softmax(z: jax.Array, axis: int = -1) -> jax.Array:
    """softmax(z)_i = exp(z_i - max z) / sum_j exp(z_j - max z); stable for logits of 1e4."""
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(z: jax.Array, axis: int = -1) -> jax.Array:
    """log_softmax(z)_i = z_i - max z - log sum_j exp(z_j - max z)."""
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


def _weighted_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-sum_c y_c log softmax(z)_c; logits (..., C), labels (...) int or (..., C) probs -> (...)."""
    logp = log_softmax(logits.astype(jnp.float32))
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"cross_entropy: integer labels {labels.shape} must match logits {logits.shape} "
                "without the class axis"
            )
        return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    if labels.shape != logits.shape:
        raise ValueError(
            f"cross_entropy: target probabilities {labels.shape} != logits {logits.shape}"
        )
    return -jnp.sum(labels * logp, axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over the batch (and mask) of -sum_c y_c log softmax(z)_c; logits (..., C)."""
    return _weighted_mean(cross_entropy_per_example(logits, labels), mask)


def cross_entropy_from_probs(p: jax.Array, y: jax.Array) -> jax.Array:
    """Mean of -sum_c y_c log p_c for probabilities p (..., C) and targets y (..., C)."""
    return jnp.mean(-jnp.sum(y * jnp.log(p), axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean of [argmax_c z_c == y]; logits (..., C), labels (...) int or (..., C) probs."""
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    return _weighted_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), mask)
