"""Flax linen modules, thin wrappers over dlkit.ops. Listed in the order of docs/API.md."""

from dlkit.nn.alexnet import AlexNet
from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.charlm import CharRNNLM
from dlkit.nn.cnn import CNN, AvgPool, Conv2D, LeNet5, MaxPool
from dlkit.nn.dropout import Dropout
from dlkit.nn.mlp import MLP, LinearClassifier
from dlkit.nn.norm import BatchNorm
from dlkit.nn.recurrent import GRU, LSTM, GRUCell, LSTMCell, Recurrent, SimpleRNN, SimpleRNNCell
from dlkit.nn.resnet import ResNet
from dlkit.nn.sampling import generate, generate_text
from dlkit.nn.summary import conv_vs_dense, parameter_sharing, summary
from dlkit.nn.transformer import (
    TransformerBlock,
    TransformerClassifier,
    TransformerLM,
    attention_weights,
    contextual_embeddings,
)
from dlkit.nn.vgg import VGG
from dlkit.nn.word2vec import Word2Vec

__all__ = [
    # layers
    "Conv2D",
    "MaxPool",
    "AvgPool",
    "BatchNorm",
    "Dropout",
    "Recurrent",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "SimpleRNNCell",
    "LSTMCell",
    "GRUCell",
    "MultiHeadAttention",
    "TransformerBlock",
    # models (also by name: dlkit.models.get)
    "MLP",
    "LinearClassifier",
    "CNN",
    "LeNet5",
    "AlexNet",
    "VGG",
    "ResNet",
    "CharRNNLM",
    "TransformerLM",
    "TransformerClassifier",
    "Word2Vec",
    # sampling and probes
    "generate",
    "generate_text",
    "contextual_embeddings",
    "attention_weights",
    # inspection
    "summary",
    "conv_vs_dense",
    "parameter_sharing",
]
