"""Backpropagation by hand: the MLP's forward and backward passes written with the chain rule.

Works on the params of `dlkit.nn.MLP` ({"hidden_0": {"kernel", "bias"}, ..., "head": {...}}):
  forward   z_l = a_{l-1} W_l + b_l,  a_l = f(z_l),  logits z_L = a_{L-1} W_L + b_L,
  loss      L = mean_i CE(softmax(z_L,i), y_i),
  backward  dL/dz_L = (softmax(z_L) - y) / B,  dW_l = a_{l-1}^T dz_l,  db_l = sum_i dz_l,
            da_{l-1} = dz_l W_l^T,  dz_{l-1} = da_{l-1} * f'(z_{l-1}).
The gradient pytree has the same structure as `jax.grad` of the same loss with respect to params.
"""

import jax
import jax.numpy as jnp

from dlkit import errors
from dlkit.ops.activations import get_activation
from dlkit.ops.losses import cross_entropy, softmax

# f'(z) written with the activation's output a = f(z) where that is the usual form.
_DERIVATIVES = {
    "relu": lambda z, a: (z > 0).astype(z.dtype),
    "sigmoid": lambda z, a: a * (1 - a),
    "tanh": lambda z, a: 1 - a * a,
    "identity": lambda z, a: jnp.ones_like(z),
}


def layer_names(params: dict) -> list[str]:
    """["hidden_0", ..., "hidden_{n-1}", "head"]: the MLP's layers from input to output."""
    hidden = sorted((k for k in params if k.startswith("hidden_")), key=lambda k: int(k[7:]))
    if "head" not in params or len(hidden) + 1 != len(params):
        raise ValueError(
            f"backprop: expected dlkit.nn.MLP params hidden_0..hidden_n + head, got "
            f"{sorted(params)}"
        )
    return [*hidden, "head"]


def activation_grad(name: str, z: jax.Array, a: jax.Array) -> jax.Array:
    """f'(z) for activation `name`, given z and a = f(z); same shape as z."""
    get_activation(name)  # unknown names raise ConfigError listing every activation
    what = "activation with a hand-written derivative (backprop)"
    return errors.choose(_DERIVATIVES, name, what)(z, a)


def mlp_forward(params: dict, x: jax.Array, activation: str = "relu"):
    """logits (B, C) and the cache [(a_{l-1} (B, D_in), z_l (B, D_out)) per layer]; x (B, ...)."""
    f = get_activation(activation)
    a = x.reshape(x.shape[0], -1)  # (B, D)
    names = layer_names(params)
    cache = []
    for i, name in enumerate(names):
        w, b = params[name]["kernel"], params[name]["bias"]
        if a.shape[-1] != w.shape[0]:
            raise ValueError(
                f"backprop: layer {name} kernel {w.shape} does not take input {a.shape}"
            )
        z = a @ w + b  # (B, D_out)
        cache.append((a, z))
        a = f(z) if i < len(names) - 1 else z
    return a, cache


def softmax_cross_entropy_backward(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """dL/dz = (softmax(z) - y) / B for L = mean CE; logits (B, C), labels (B,) int or (B, C)."""
    if logits.ndim != 2:
        raise ValueError(f"backprop: logits must be (B, C), got {logits.shape}")
    y = labels
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"backprop: labels {labels.shape} do not match logits {logits.shape}")
        y = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    elif labels.shape != logits.shape:
        raise ValueError(f"backprop: target probabilities {labels.shape} != logits {logits.shape}")
    return (softmax(logits) - y) / logits.shape[0]


def linear_backward(a: jax.Array, w: jax.Array, dz: jax.Array):
    """z = a W + b: da = dz W^T (B, D_in), dW = a^T dz (D_in, D_out), db = sum dz."""
    return dz @ w.T, a.T @ dz, jnp.sum(dz, axis=0)


def mlp_backward(params: dict, cache: list, dlogits: jax.Array, activation: str = "relu") -> dict:
    """Gradient pytree {layer: {"kernel": dW, "bias": db}} from dL/dlogits (B, C) and the cache."""
    f = get_activation(activation)
    names = layer_names(params)
    grads = {}
    dz = dlogits
    for i in reversed(range(len(names))):
        a_prev, _ = cache[i]
        da_prev, dw, db = linear_backward(a_prev, params[names[i]]["kernel"], dz)
        grads[names[i]] = {"bias": db, "kernel": dw}
        if i > 0:
            z_prev = cache[i - 1][1]
            dz = da_prev * activation_grad(activation, z_prev, f(z_prev))
    return {name: grads[name] for name in names}


def mlp_value_and_grad(params: dict, x: jax.Array, labels: jax.Array, activation: str = "relu"):
    """(mean cross-entropy, grads) by the chain rule; equals jax.value_and_grad on dlkit.nn.MLP."""
    logits, cache = mlp_forward(params, x, activation)
    dlogits = softmax_cross_entropy_backward(logits, labels)
    return cross_entropy(logits, labels), mlp_backward(params, cache, dlogits, activation)
