"""The word2vec trainer (experiments only): the shared train step inside `lax.scan`.

`train_word2vec` runs `dlkit.train.train_step` (objective "negative_sampling") inside `lax.scan`,
several steps per jitted call; `word_vectors` reads the trained input table. Saving, loading and
transferring vectors is library code: `dlkit.train.embeddings`.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dlkit import models
from dlkit.data.word2vec import Word2VecData
from dlkit.errors import ConfigError
from dlkit.train import objectives
from dlkit.train.build import make_optimizer
from dlkit.train.state import TrainState, create_train_state
from dlkit.train.step import train_step


def create_word2vec_state(
    data: Word2VecData, *, features: int, learning_rate: float, num_steps: int, seed: int = 0
) -> TrainState:
    """Step-0 state of the registry's skipgram/cbow model with Adam and a cosine schedule."""
    model = models.get(
        data.mode,
        num_classes=data.tokenizer.vocab_size,
        features=features,
        context_size=data.context_size,
    )
    opt = ml_collections.ConfigDict(
        {"name": "adam", "learning_rate": learning_rate, "schedule": "cosine"}
    )
    sample = jnp.zeros((1, data.context_size + 1 + data.negatives), jnp.int32)
    return create_train_state(model, make_optimizer(opt, num_steps), sample, seed)


@functools.partial(jax.jit, donate_argnums=0)
def _train_chunk(state: TrainState, batches: jax.Array) -> tuple[TrainState, dict]:
    """lax.scan of the shared train_step over batches (S, B, N); metric sums over the S steps."""
    objective = objectives.get("negative_sampling")

    def body(s, rows):
        return train_step(s, {"inputs": rows}, objective=objective)

    state, sums = jax.lax.scan(body, state, batches)
    return state, jax.tree.map(jnp.sum, sums)


def _chunks(data: Word2VecData, batch_size: int, steps_per_call: int):
    """Endless (S, B, N) arrays of batches, epoch after epoch (epoch e seeded (seed, e))."""
    pending, have, epoch = [], 0, 0
    while True:
        batches = data.epoch(epoch).batches(batch_size)
        epoch += 1
        pending.append(batches)
        have += len(batches)
        while have >= steps_per_call:
            stacked = np.concatenate(pending)
            yield stacked[:steps_per_call]
            pending, have = [stacked[steps_per_call:]], have - steps_per_call


def train_word2vec(
    data: Word2VecData,
    *,
    features: int = 100,
    batch_size: int = 4096,
    num_steps: int = 1000,
    learning_rate: float = 3e-3,
    steps_per_call: int = 50,
    seed: int = 0,
    log_fn=None,
) -> tuple[TrainState, list[dict]]:
    """Trains num_steps (rounded up to whole calls of steps_per_call) -> (state, history)."""
    if min(features, batch_size, num_steps, steps_per_call) < 1:
        raise ConfigError("features, batch_size, num_steps and steps_per_call must all be >= 1")
    calls = -(-num_steps // steps_per_call)
    state = create_word2vec_state(
        data,
        features=features,
        learning_rate=learning_rate,
        num_steps=calls * steps_per_call,
        seed=seed,
    )
    history, chunks = [], _chunks(data, batch_size, steps_per_call)
    for _ in range(calls):
        state, sums = _train_chunk(state, jnp.asarray(next(chunks)))
        sums = {k: float(v) for k, v in jax.device_get(sums).items()}
        row = {"step": int(state.step), **objectives.summarize(sums)}
        history.append(row)
        if log_fn is not None:
            log_fn(row)
    return state, history


def word_vectors(state: TrainState, data: Word2VecData) -> tuple[list[str], np.ndarray]:
    """(words, vectors (V', D)): the input table without the <unk> row."""
    table = np.asarray(jax.device_get(state.params["input_embedding"]), np.float32)
    start = 1 if data.tokenizer.has_unk else 0
    return list(data.tokenizer.vocab[start:]), table[start:]
