"""flax's Dropout layer over dlkit.ops.dropout (16 random bits per element)."""

import flax.linen as nn
import jax.numpy as jnp

from dlkit.ops.dropout import dropout


class Dropout(nn.Dropout):
    """flax's Dropout (same fields and call) with dlkit.ops.dropout's mask: half the random bits."""

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        """inputs masked and rescaled in training; as they are when deterministic or rate 0."""
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rng = self.make_rng(self.rng_collection) if rng is None else rng
        return dropout(inputs, self.rate, rng, self.broadcast_dims)
