"""Word2vec as a linen module: input (word) and output (context) embedding tables."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlkit.ops import word2vec as w2v


def _uniform_init(key, shape, dtype=jnp.float32):
    """U(-0.5 / D, 0.5 / D), the reference word2vec initialisation of the input vectors."""
    return jax.random.uniform(key, shape, dtype, -0.5 / shape[-1], 0.5 / shape[-1])


class Word2Vec(nn.Module):
    """Negative-sampling scores (B, 1+K) for packed ids (B, N).

    skipgram: inputs = [center, context, negatives...] (N = 2 + K);
    cbow:     inputs = [contexts (C = context_size, -1 pads)..., target, negatives...].
    """

    num_classes: int  # vocabulary size V
    features: int = 100
    mode: str = "skipgram"
    context_size: int = 10  # cbow only: 2 * window columns of context ids

    def setup(self):
        if self.mode not in ("skipgram", "cbow"):
            raise ValueError(f"Word2Vec mode must be 'skipgram' or 'cbow', got {self.mode!r}")
        shape = (self.num_classes, self.features)
        self.input_embedding = self.param("input_embedding", _uniform_init, shape)
        self.output_embedding = self.param("output_embedding", nn.initializers.zeros, shape)

    def __call__(self, inputs: jax.Array, *, train: bool = False) -> jax.Array:
        head = 1 if self.mode == "skipgram" else self.context_size
        if inputs.ndim != 2 or inputs.shape[1] < head + 2:
            raise ValueError(
                f"Word2Vec({self.mode}): inputs {inputs.shape} must be (B, {head} + 1 + K), K >= 1"
            )
        w_in, w_out = self.input_embedding, self.output_embedding
        if self.mode == "skipgram":
            return w2v.sgns_scores(w_in, w_out, inputs[:, 0], inputs[:, 1], inputs[:, 2:])
        return w2v.cbow_scores(
            w_in, w_out, inputs[:, :head], inputs[:, head], inputs[:, head + 1 :]
        )

    def embeddings(self) -> jax.Array:
        """The word vectors: the input table (V, D)."""
        return self.input_embedding


MODELS = {
    "skipgram": functools.partial(Word2Vec, mode="skipgram"),
    "cbow": functools.partial(Word2Vec, mode="cbow"),
}
