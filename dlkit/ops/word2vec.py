"""Word2vec math: negative-sampling losses (skip-gram, CBOW), noise sampling, cosine look-ups."""

import jax
import jax.numpy as jnp
import numpy as np


def negative_sampling_loss(scores: jax.Array) -> jax.Array:
    """-log s(z_0) - sum_k log s(-z_k); scores (..., 1 + K), column 0 the true pair -> (...)."""
    if scores.ndim < 1 or scores.shape[-1] < 2:
        raise ValueError(f"negative_sampling_loss: scores {scores.shape} need (..., 1 + K), K >= 1")
    scores = scores.astype(jnp.float32)
    return -jax.nn.log_sigmoid(scores[..., 0]) - jnp.sum(jax.nn.log_sigmoid(-scores[..., 1:]), -1)


def _check_ids(name: str, **ids) -> None:
    shapes = {k: v.shape for k, v in ids.items()}
    lead = {s[:1] for s in shapes.values()}
    if len(lead) != 1:
        raise ValueError(f"{name}: batch sizes differ: {shapes}")


def sgns_scores(w_in, w_out, centers, contexts, negatives) -> jax.Array:
    """[u_o . v_c, u_nk . v_c]; w_* (V, D), centers/contexts (B,), negatives (B, K) -> (B, 1+K)."""
    if centers.ndim != 1 or contexts.ndim != 1 or negatives.ndim != 2:
        raise ValueError(
            f"sgns_scores: centers {centers.shape} and contexts {contexts.shape} must be (B,), "
            f"negatives {negatives.shape} (B, K)"
        )
    _check_ids("sgns_scores", centers=centers, contexts=contexts, negatives=negatives)
    v = w_in[centers]  # (B, D)
    u = w_out[jnp.concatenate([contexts[:, None], negatives], axis=1)]  # (B, 1+K, D)
    return jnp.einsum("bd,bkd->bk", v, u)


def cbow_scores(w_in, w_out, contexts, targets, negatives) -> jax.Array:
    """h = mean v over real contexts (id >= 0); [u_t . h, u_nk . h]; contexts (B, C) -> (B, 1+K)."""
    if contexts.ndim != 2 or targets.ndim != 1 or negatives.ndim != 2:
        raise ValueError(
            f"cbow_scores: contexts {contexts.shape} must be (B, C), targets {targets.shape} (B,), "
            f"negatives {negatives.shape} (B, K)"
        )
    _check_ids("cbow_scores", contexts=contexts, targets=targets, negatives=negatives)
    real = (contexts >= 0).astype(w_in.dtype)  # (B, C); -1 pads a short window
    v = w_in[jnp.maximum(contexts, 0)] * real[..., None]  # (B, C, D)
    h = jnp.sum(v, 1) / jnp.maximum(jnp.sum(real, 1, keepdims=True), 1.0)  # (B, D)
    u = w_out[jnp.concatenate([targets[:, None], negatives], axis=1)]  # (B, 1+K, D)
    return jnp.einsum("bd,bkd->bk", h, u)


def normalize_rows(x, eps: float = 1e-8):
    """x / ||x||_2 row-wise; x (N, D) numpy or jax -> (N, D)."""
    xp = jnp if isinstance(x, jax.Array) else np
    return x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_similarity(a, b):
    """a . b / (||a|| ||b||) over the last axis; broadcasting (..., D) -> (...)."""
    xp = jnp if isinstance(a, jax.Array) or isinstance(b, jax.Array) else np
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cosine_similarity: last axes differ: {a.shape} vs {b.shape}")
    return xp.sum(normalize_rows(a) * normalize_rows(b), -1)


def nearest_neighbours(table, query, k: int = 10, exclude=()) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of table (V, D) by cosine to query (D,), skipping `exclude` -> (ids, sims)."""
    table, query = np.asarray(table, np.float32), np.asarray(query, np.float32)
    if table.ndim != 2 or query.shape != table.shape[1:]:
        raise ValueError(f"nearest_neighbours: table {table.shape} must be (V, D), query (D,)")
    sims = normalize_rows(table) @ normalize_rows(query[None])[0]  # (V,)
    sims[list(exclude)] = -np.inf
    k = min(k, len(sims) - len(set(exclude)))
    ids = np.argsort(-sims, kind="stable")[:k]
    return ids, sims[ids]


def analogy(table, a: int, b: int, c: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Nearest rows to unit(a) - unit(b) + unit(c) (a - b + c, e.g. king - man + woman)."""
    unit = normalize_rows(np.asarray(table, np.float32))
    return nearest_neighbours(unit, unit[a] - unit[b] + unit[c], k, exclude=(a, b, c))
