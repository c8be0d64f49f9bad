"""The model and the step-0 train state of a run, from its RunOptions."""

import jax.numpy as jnp

from dlkit import models
from dlkit.train import ema, freeze, vectors
from dlkit.train.optim import make_optimizer
from dlkit.train.options import RunOptions
from dlkit.train.state import TrainState, create_train_state


def build_model(options: RunOptions, dataset):
    """The registry model options.model names; num_classes defaults to the dataset's."""
    options = RunOptions.of(options)
    return models.get(options.model.name, **options.model.factory_kwargs(dataset.num_classes))


def create_state(options: RunOptions, dataset, model, seed: int | None = None) -> TrainState:
    """A fresh step-0 state (seed: options.seed unless given): model.init on one example batch,
    the optimizer (with freezing and per-group rates), word vectors and frozen state applied, and
    the EMA of the params started (config.ema.decay > 0)."""
    options = RunOptions.of(options)
    seed = options.seed if seed is None else seed
    base = make_optimizer(options.optimizer, options.num_train_steps)
    tx = freeze.wrap_optimizer(options.transfer, base)
    inputs = jnp.asarray(dataset.example_batch(1)["inputs"])
    state = create_train_state(model, tx, inputs, seed)
    state = vectors.init_vectors(state, options.transfer, dataset, seed)
    state = freeze.freeze_state(state, options.transfer)
    return ema.start(state, options.ema.decay)
