"""Pure jnp math with no parameters: the notes as functions."""

from dlkit.ops.activations import gelu, get_activation, identity, relu, sigmoid, tanh
from dlkit.ops.attention import attention_mask, attention_reference
from dlkit.ops.attention_dispatch import dot_product_attention
from dlkit.ops.chunked_attention import chunked_attention  # noqa: F401
from dlkit.ops.conv import adaptive_avg_pool, conv2d, max_pool2d
from dlkit.ops.linear import linear
from dlkit.ops.losses import (
    accuracy,
    cross_entropy,
    cross_entropy_from_probs,
    cross_entropy_per_example,
    log_softmax,
    softmax,
)
from dlkit.ops.lstm_stack import lstm_stack
from dlkit.ops.pooling import (
    avg_pool,
    conv_output_size,
    max_pool,
    pool_output_size,
    receptive_field,
)
from dlkit.ops.recurrent import gru_step, lstm_step, rnn_step, scan_steps
from dlkit.ops.word2vec import analogy, cosine_similarity, nearest_neighbours

__all__ = [
    "accuracy",
    "attention_mask",
    "attention_reference",
    "avg_pool",
    "conv_output_size",
    "cross_entropy",
    "cross_entropy_from_probs",
    "cross_entropy_per_example",
    "dot_product_attention",
    "gelu",
    "get_activation",
    "identity",
    "linear",
    "log_softmax",
    "max_pool",
    "pool_output_size",
    "receptive_field",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]
__all__ += ["adaptive_avg_pool", "conv2d", "max_pool2d"]
__all__ += ["analogy", "cosine_similarity", "nearest_neighbours"]
__all__ += ["gru_step", "lstm_stack", "lstm_step", "rnn_step", "scan_steps"]
