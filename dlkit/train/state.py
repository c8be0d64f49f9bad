"""TrainState: the immutable pytree that a train step maps to the next."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """step, params, optimizer state, model state (e.g. batch_stats), an RNG key and, with
    config.ema.decay > 0, the params' moving average (dlkit.train.ema; None when off)."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # dict of mutable collections, {} for stateless models
    rng: jax.Array  # raw uint32 key; per-step keys are fold_in(rng, step)
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_params: Any = None  # float32 EMA of params, or None (no EMA: the state as without one)
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    def variables(self, params=None) -> dict:
        """{"params": params, **model_state}, ready for apply_fn."""
        return {"params": self.params if params is None else params, **self.model_state}

    def checkpoint_tree(self) -> dict:
        """The array part of the state, as saved by the checkpointer ("ema_params" if any)."""
        tree = {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "model_state": self.model_state,
            "rng": self.rng,
        }
        return tree if self.ema_params is None else {**tree, "ema_params": self.ema_params}

    def from_checkpoint_tree(self, tree: dict) -> "TrainState":
        """This state with its arrays replaced by a restored checkpoint tree."""
        return self.replace(**tree)


def init_variables(model: nn.Module, inputs: jax.Array, seed: int) -> tuple[dict, dict]:
    """(params, model_state) from model.init on a sample batch; deterministic in seed."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    variables = jax.jit(lambda x: model.init({"params": key, "dropout": key}, x, train=False))(
        inputs
    )
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    inputs: jax.Array,
    seed: int,
    params: Any = None,
    model_state: Any = None,
) -> TrainState:
    """A step-0 TrainState; params/model_state default to model.init on `inputs` (B, ...)."""
    if params is None:
        params, init_state = init_variables(model, inputs, seed)
        model_state = init_state if model_state is None else model_state
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=model_state or {},
        rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1),
        apply_fn=model.apply,
        tx=tx,
    )
