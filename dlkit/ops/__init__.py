"""Pure jnp math with no parameters: the notes as functions."""

from dlkit.ops.activations import gelu, get_activation, identity, relu, sigmoid, tanh
from dlkit.ops.attention import attention_mask, attention_reference, dot_product_attention
from dlkit.ops.linear import linear
from dlkit.ops.losses import (
    accuracy,
    cross_entropy,
    cross_entropy_from_probs,
    cross_entropy_per_example,
    log_softmax,
    softmax,
)
from dlkit.ops.pooling import (
    avg_pool,
    conv_output_size,
    max_pool,
    pool_output_size,
    receptive_field,
)

__all__ = [
    "accuracy", "attention_mask", "attention_reference", "avg_pool", "conv_output_size",
    "cross_entropy", "cross_entropy_from_probs", "cross_entropy_per_example",
    "dot_product_attention", "gelu", "get_activation", "identity", "linear", "log_softmax",
    "max_pool", "pool_output_size", "receptive_field", "relu", "sigmoid", "softmax", "tanh",
]
