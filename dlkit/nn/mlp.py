"""Fully connected models: the notes' MLP and the linear softmax classifier."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlkit.nn.dropout import Dropout
from dlkit.ops import get_activation


class MLP(nn.Module):
    """logits = W_L a(... a(W_1 x + b_1) ...) + b_L; x (B, ...) is flattened to (B, D)."""

    num_classes: int = 10
    hidden_sizes: Sequence[int] = (128, 64)
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        act = get_activation(self.activation)
        x = x.reshape(x.shape[0], -1)  # (B, D)
        for i, width in enumerate(self.hidden_sizes):
            x = act(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(x))
            if self.dropout_rate:
                x = Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)  # (B, C)


LinearClassifier = functools.partial(MLP, hidden_sizes=())
LinearClassifier.__doc__ = "Softmax regression: logits = W x + b, x flattened."

MODELS = {"mlp": MLP, "linear": LinearClassifier}
