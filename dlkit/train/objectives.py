"""Objectives: objective(logits, batch) -> (scalar loss, metric sums with a "count")."""

import math

import jax.numpy as jnp

from dlkit import errors
from dlkit.ops.losses import cross_entropy_per_example
from dlkit.ops.word2vec import negative_sampling_loss


def _weights(batch: dict, shape) -> jnp.ndarray:
    mask = batch.get("mask")
    return (
        jnp.ones(shape, jnp.float32)
        if mask is None
        else jnp.broadcast_to(mask, shape).astype(jnp.float32)
    )


def cross_entropy(logits, batch):
    """loss = sum_i m_i CE(z_i, y_i) / sum_i m_i over every (masked) target position."""
    targets = batch["targets"]
    per = cross_entropy_per_example(logits, targets)  # (B,) or (B, T)
    w = _weights(batch, per.shape)
    labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, -1)
    count = jnp.sum(w)
    loss_sum = jnp.sum(per * w)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * w)
    return loss_sum / jnp.maximum(count, 1.0), {
        "loss": loss_sum,
        "accuracy": correct,
        "count": count,
    }


def negative_sampling(scores, batch):
    """Word2vec: mean over rows of -log s(z_0) - sum_k log s(-z_k); scores (B, 1 + K)."""
    per = negative_sampling_loss(scores)
    w = _weights(batch, per.shape)
    count, loss_sum = jnp.sum(w), jnp.sum(per * w)
    beats = jnp.sum((scores[:, 0] > jnp.max(scores[:, 1:], -1)) * w)  # true pair ranks first
    return loss_sum / jnp.maximum(count, 1.0), {"loss": loss_sum, "accuracy": beats, "count": count}


OBJECTIVES = {"cross_entropy": cross_entropy, "negative_sampling": negative_sampling}


def get(name: str):
    """The objective registered as `name`."""
    return errors.choose(OBJECTIVES, name, "loss")


def summarize(sums: dict) -> dict:
    """Metric sums (with "count") -> means; adds bits = loss / ln 2 (bits per target token)."""
    count = max(float(sums.get("count", 1.0)), 1.0)
    out = {k: float(v) / count for k, v in sums.items() if k != "count"}
    if "loss" in out:
        out["bits"] = out["loss"] / math.log(2)
    return out
