"""The model, the optimizer and the step-0 train state of a run, from its RunOptions."""

import jax.numpy as jnp
import optax

from dlkit import models
from dlkit.train import ema, freeze, optim, vectors
from dlkit.train.options.sections import OptimizerOptions, RunOptions
from dlkit.train.state import TrainState, create_train_state


def build_model(options: RunOptions, dataset=None, *, num_classes: int | None = None):
    """The registry model options.model names (options: RunOptions or a config); num_classes:
    the model section's, else the given one, else the dataset's."""
    options = RunOptions.of(options)
    if num_classes is None and dataset is not None:
        num_classes = dataset.num_classes
    return models.get(options.model.name, **options.model.factory_kwargs(num_classes))


def make_optimizer(options: OptimizerOptions, num_train_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip_norm > 0) -> the named rule with the schedule.

    options: OptimizerOptions, or a config's optimizer section (parsed into one, defaults filled).
    """
    return optim.chain(OptimizerOptions.of(options), num_train_steps)


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
