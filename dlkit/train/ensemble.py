"""Ensembles of K train states (members with seeds seed .. seed + K - 1), trained by one vmapped
step on the same batches and evaluated on the mean of their predicted probabilities."""

import functools

import jax
import jax.numpy as jnp

from dlkit.train import vmap


def ensemble_state(size: int, seed: int, create):
    """create(seed), or `size` members create(seed + k) stacked on a leading axis."""
    if size == 1:
        return create(seed)
    members = [create(seed + k) for k in range(size)]
    return members[0].replace(**vmap.stack([m.checkpoint_tree() for m in members]))


def ensemble_train_step(step_fn):
    """step_fn(state, batch) vmapped over stacked members; metric sums averaged over members."""
    member_steps = vmap.ensemble_step(step_fn)

    def step(state, batch):
        state, sums = member_steps(state, batch)
        return state, jax.tree.map(lambda x: jnp.mean(x, 0), sums)

    return step


def ensemble_eval_step(objective):
    """The eval step of stacked members: objective on the log of their mean softmax."""
    return functools.partial(vmap.ensemble_eval_step, objective=objective)
