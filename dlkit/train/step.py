"""The one train step and eval step shared by every model."""

import functools

import jax
import numpy as np
import optax

from dlkit.train.state import TrainState


def train_step(state: TrainState, batch: dict, *, objective) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; returns the next state and metric sums."""
    step_rng = jax.random.fold_in(state.rng, state.step)  # dropout key: a function of (rng, step)
    mutable = list(state.model_state)  # e.g. ["batch_stats"]; [] for stateless models

    def loss_fn(params):
        logits, new_model_state = state.apply_fn(
            state.variables(params),
            batch["inputs"],
            train=True,
            rngs={"dropout": step_rng},
            mutable=mutable,
        )
        loss, sums = objective(logits, batch)
        return loss, (sums, new_model_state)

    (_, (sums, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        model_state=dict(new_model_state) if mutable else state.model_state,
    )
    return new_state, {**sums, "grad_norm": optax.global_norm(grads) * sums["count"]}


def eval_step(state: TrainState, batch: dict, *, objective) -> dict:
    """Metric sums on `batch` in inference mode (BatchNorm running averages, no dropout)."""
    logits = state.apply_fn(state.variables(), batch["inputs"], train=False)
    _, sums = objective(logits, batch)
    return sums


def make_steps(objective):
    """(train_step, eval_step) jitted; the train step donates the incoming state."""
    train = jax.jit(functools.partial(train_step, objective=objective), donate_argnums=0)
    evaluate = jax.jit(functools.partial(eval_step, objective=objective))
    return train, evaluate


def evaluate(eval_fn, state: TrainState, batches) -> dict:
    """Sums eval_fn's metric sums over batches (on host, float64)."""
    total: dict = {}
    for batch in batches:
        for k, v in jax.device_get(eval_fn(state, batch)).items():
            total[k] = total.get(k, 0.0) + float(np.asarray(v, np.float64))
    return total
