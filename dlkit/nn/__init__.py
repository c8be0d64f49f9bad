"""Flax linen modules, thin wrappers over dlkit.ops."""

from dlkit.nn.mlp import MLP, LinearClassifier

__all__ = ["MLP", "LinearClassifier"]
