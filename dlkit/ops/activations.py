"""Activation functions as pure jnp functions."""

import jax
import jax.numpy as jnp

from dlkit import errors


def relu(x: jax.Array) -> jax.Array:
    """relu(x) = max(0, x), elementwise."""
    return jnp.maximum(x, 0)


def sigmoid(x: jax.Array) -> jax.Array:
    """sigmoid(x) = 1 / (1 + exp(-x)), elementwise."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """tanh(x) = (e^x - e^-x) / (e^x + e^-x), elementwise."""
    return jnp.tanh(x)


def gelu(x: jax.Array) -> jax.Array:
    """gelu(x) = x * Phi(x) (tanh approximation), elementwise."""
    return jax.nn.gelu(x)


def gelu_exact(x: jax.Array) -> jax.Array:
    """gelu(x) = x * Phi(x) with the erf form (PyTorch's nn.GELU() default), elementwise."""
    return jax.nn.gelu(x, approximate=False)


def identity(x: jax.Array) -> jax.Array:
    """identity(x) = x."""
    return x


ACTIVATIONS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "gelu_exact": gelu_exact,
    "identity": identity,
}


def get_activation(name: str):
    """Looks an activation up by name; unknown names list the choices."""
    return errors.choose(ACTIVATIONS, name, "activation")
