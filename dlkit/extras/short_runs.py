"""Short training runs for the notes' experiments: the shared train step from given weights.

`run_steps` is the one loop behind activations, lr_sweep, compare_optimizers and
linear_templates: a fresh optimizer, a copy of the given params, `steps` steps of
`dlkit.train.train_step` (cross entropy), and a `watch(step, state, sums)` callback that sees the
state before the first step (sums None) and after every step, and stops the run by returning True.
"""

import functools
import itertools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections

from dlkit.train import create_train_state, evaluate, make_optimizer, make_steps, objectives
from dlkit.train.objectives import summarize
from dlkit.train.state import TrainState

Watch = Callable[[int, TrainState, dict | None], bool | None]


@functools.cache
def _steps():
    """(train_fn, eval_fn) for cross entropy, jitted once per process."""
    return make_steps(objectives.get("cross_entropy"))


def evaluate_on(state: TrainState, batches) -> dict:
    """Summary metrics (loss, accuracy, ...) of `state` over padded, masked batches."""
    return summarize(evaluate(_steps()[1], state, batches))


def run_steps(
    model, params, optimizer: dict, batches: Iterator[dict], steps: int, *,
    seed: int = 0, watch: Watch | None = None, compile_first: bool = False,
) -> tuple[TrainState, int | None]:  # fmt: skip
    """(final state, step where watch stopped the run or None); params are copied, not donated.

    optimizer: {"name", "learning_rate", ...} as config.optimizer; compile_first compiles the
    step on a copy of the state and the first batch before step 0 (timings stay off compilation).
    """
    train_fn = _steps()[0]
    tx = make_optimizer(ml_collections.ConfigDict(optimizer), steps)
    params = jax.tree.map(jnp.array, params)  # a copy: the train step donates (deletes) its input
    first = next(batches)
    state = create_train_state(model, tx, first["inputs"][:1], seed, params=params)
    if compile_first:
        jax.block_until_ready(train_fn(jax.tree.map(jnp.copy, state), first))
    batches, sums = itertools.chain([first], batches), None
    for step in range(steps + 1):
        if watch is not None and watch(step, state, sums):
            return state, step
        if step < steps:
            state, sums = train_fn(state, next(batches))
    return state, None
