"""Flax linen modules, thin wrappers over dlkit.ops."""

from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.mlp import MLP, LinearClassifier
from dlkit.nn.recurrent import GRU, LSTM, GRUCell, LSTMCell, Recurrent, SimpleRNN, SimpleRNNCell
from dlkit.nn.summary import conv_vs_dense, parameter_sharing, summary
from dlkit.nn.transformer import TransformerBlock, TransformerClassifier, TransformerLM
from dlkit.nn.word2vec import Word2Vec

__all__ = ["MLP", "LinearClassifier"]
__all__ += ["Word2Vec"]
__all__ += ["conv_vs_dense", "parameter_sharing", "summary"]
__all__ += ["MultiHeadAttention", "TransformerBlock", "TransformerClassifier", "TransformerLM"]
__all__ += ["GRU", "GRUCell", "LSTM", "LSTMCell", "Recurrent", "SimpleRNN", "SimpleRNNCell"]
