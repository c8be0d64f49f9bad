"""Ensembles of K train states (members with seeds seed .. seed + K - 1), trained by one vmapped
step on the same batches and evaluated on the mean of their predicted probabilities."""

import copy
import functools

import jax
import jax.numpy as jnp

from dlkit.train import vmap
from dlkit.train.options import RunOptions


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


def ensemble_state_from_config(config, create):
    """Deprecated (phase 2 of issue 14 deletes it): create(config) per member, seeds in config."""

    def create_for_seed(seed):
        member_config = copy.deepcopy(config)
        member_config.seed = seed
        return create(member_config)

    size = RunOptions.from_config(config).parallel.ensemble_size
    return ensemble_state(size, config.seed, create_for_seed)
