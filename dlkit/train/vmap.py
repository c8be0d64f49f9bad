"""vmap at work: per-example gradients, DP-SGD aggregation, and ensembles of K train states."""

import jax
import jax.numpy as jnp


def per_example_grads(loss_fn, params, batch: dict, *, has_aux: bool = False):
    """g_i = d loss_fn(params, batch_i) / d params for every row i; leaves (B, *param.shape).

    `loss_fn(params, batch)` takes a batch; each example is passed as a batch of one.
    """
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch arrays differ in leading size: {sizes}")

    def one(example):
        return jax.grad(loss_fn, has_aux=has_aux)(params, jax.tree.map(lambda x: x[None], example))

    return jax.vmap(one)(batch)


def per_example_norms(grads) -> jax.Array:
    """||g_i|| over all leaves for per-example grads with leading axis B -> (B,)."""
    squares = [
        jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in jax.tree.leaves(grads)
    ]
    return jnp.sqrt(sum(squares))


def clip_per_example(grads, clip_norm: float):
    """g_i * min(1, C / ||g_i||); per-example grads (B, ...) -> (clipped, norms (B,))."""
    norms = per_example_norms(grads)
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
    return jax.tree.map(lambda g: g * scale.reshape(-1, *[1] * (g.ndim - 1)), grads), norms


def clipped_sum(grads, clip_norm: float):
    """sum_i g_i min(1, C / ||g_i||); per-example grads (B, ...) -> (...)."""
    clipped, _ = clip_per_example(grads, clip_norm)
    return jax.tree.map(lambda g: jnp.sum(g, 0), clipped)


def add_noise(grads, std: float, key: jax.Array):
    """g + N(0, std^2 I) on every leaf, one key per leaf from `key`."""
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    noised = [
        g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noised)


def dp_noised_sum(grads, clip_norm: float, noise_multiplier: float, key: jax.Array, axis_name=None):
    """DP-SGD: sum_i clip(g_i, C) + N(0, (sigma C)^2 I); per-example grads (B, ...) -> (...).
    Under pmap (`axis_name`) the clipped sums are psum-ed before the one noise draw."""
    summed = clipped_sum(grads, clip_norm)
    if axis_name is not None:
        summed = jax.lax.psum(summed, axis_name)
    return add_noise(summed, noise_multiplier * clip_norm, key)


def stack(trees: list):
    """K pytrees of equal structure -> one pytree with leading axis K (an ensemble)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, k: int):
    """Member k of a stacked ensemble pytree."""
    return jax.tree.map(lambda x: x[k], tree)


def ensemble_step(step_fn):
    """step_fn(state, batch) -> (state, sums) vmapped over stacked states; same batch for all."""
    return jax.vmap(step_fn, in_axes=(0, None))


def ensemble_eval_step(state, batch: dict, *, objective) -> dict:
    """Ensemble metric sums: objective on log of the mean of the K members' softmax."""
    logits = jax.vmap(lambda s: s.apply_fn(s.variables(), batch["inputs"], train=False))(state)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (K, B, ..., C)
    mean = jax.nn.logsumexp(log_probs, axis=0) - jnp.log(log_probs.shape[0])
    _, sums = objective(mean, batch)
    return sums
