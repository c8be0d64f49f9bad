"""Pure jnp math with no parameters: the notes as functions. Listed in the order of docs/API.md."""

from dlkit.ops.activations import gelu, gelu_exact, get_activation, identity, relu, sigmoid, tanh
from dlkit.ops.attention import attention_mask, attention_reference
from dlkit.ops.attention_dispatch import dot_product_attention
from dlkit.ops.batch_norm import batch_norm
from dlkit.ops.chunked_attention import chunked_attention
from dlkit.ops.conv import adaptive_avg_pool, conv2d, max_pool2d
from dlkit.ops.dropout import dropout
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
    # activations
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "gelu_exact",
    "identity",
    "get_activation",
    # losses
    "softmax",
    "log_softmax",
    "cross_entropy",
    "cross_entropy_per_example",
    "cross_entropy_from_probs",
    "accuracy",
    "dropout",
    # linear, convolution, pooling
    "linear",
    "conv2d",
    "max_pool2d",
    "batch_norm",
    "max_pool",
    "avg_pool",
    "adaptive_avg_pool",
    "conv_output_size",
    "pool_output_size",
    "receptive_field",
    # recurrent
    "rnn_step",
    "lstm_step",
    "gru_step",
    "scan_steps",
    "lstm_stack",
    # attention
    "dot_product_attention",
    "attention_reference",
    "attention_mask",
    "chunked_attention",
    # word vectors
    "cosine_similarity",
    "nearest_neighbours",
    "analogy",
]
