"""Convolutional layers (impl "auto": oneDNN or the fast path on CPU, lax elsewhere), the notes'
CNN, LeNet-5.

`Conv2D` and the pooling modules carry `kernel_size` / `window_shape` and `strides` so that
`dlkit.nn.summary` can compute receptive fields. `Conv2D` has the parameters of `nn.Conv`
("kernel" (kh, kw, Ci, Co), "bias" (Co,)); `impl="reference"` is `nn.Conv`'s lax convolution.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from dlkit import errors
from dlkit.nn.dropout import Dropout
from dlkit.ops import get_activation
from dlkit.ops.conv import conv2d, max_pool2d
from dlkit.ops.pooling import avg_pool

Padding = str | int | Sequence[tuple[int, int]]


class Conv2D(nn.Module):
    """y = relu?(conv(x, W) + b); x (B, H, W, Ci) -> (B, Ho, Wo, features); impl auto|fast|...

    With oneDNN (CPU, "auto") the bias and `relu` run inside its call."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    use_bias: bool = True
    impl: str = "auto"
    relu: bool = False
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        )
        return conv2d(x, kernel, bias, self.strides, self.padding, self.impl, relu=self.relu)


class MaxPool(nn.Module):
    """y[b,i,j,c] = max of the window at (i*s, j*s); x (B, H, W, C); impl auto|fast|reference."""

    window_shape: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None
    padding: Padding = "VALID"
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        strides = self.strides or self.window_shape
        return max_pool2d(x, self.window_shape, strides, self.padding, impl=self.impl)


class AvgPool(nn.Module):
    """y[b,i,j,c] = mean of the window at (i*s, j*s) (padding not counted); x (B, H, W, C)."""

    window_shape: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None
    padding: Padding = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return avg_pool(x, self.window_shape, self.strides or self.window_shape, self.padding)


def pool_layer(kind: str, window: int, impl: str = "auto", name: str | None = None) -> nn.Module:
    """A `window` x `window`, stride-`window` pooling module; kind max|avg."""
    pools = {
        "max": lambda: MaxPool((window, window), impl=impl, name=name),
        "avg": lambda: AvgPool((window, window), name=name),
    }
    return errors.choose(pools, kind, "pool")()


def _per_layer(padding, n: int) -> list:
    """One padding ("SAME", "VALID" or an int) for every layer, or a sequence of n of them."""
    if isinstance(padding, str | int):
        return [padding] * n
    if len(padding) != n:
        raise errors.ConfigError(
            f"padding {padding!r} must be one value or one per conv layer ({n})"
        )
    return list(padding)


class CNN(nn.Module):
    """[conv k x k -> act -> pool] per entry of `features`, flatten, [dense -> act] per `hidden`,
    dense num_classes; x (B, H, W, C) -> logits (B, num_classes). Defaults: the notes' network."""

    num_classes: int = 10
    features: Sequence[int] = (32, 64)
    kernel_size: int = 3
    padding: str | int | Sequence[str | int] = "SAME"  # one value, or one per conv layer
    pool: str = "max"  # max | avg
    pool_window: int = 2
    hidden: Sequence[int] = (256,)
    activation: str = "relu"
    dropout_rate: float = 0.0
    impl: str = "auto"  # auto | fast | reference (dlkit.ops.conv: fast on CPU, lax elsewhere)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (B, H, W, C), got {x.shape}")
        act = get_activation(self.activation)
        relu = self.activation == "relu"  # fused into the conv
        pads = _per_layer(self.padding, len(self.features))
        k = (self.kernel_size, self.kernel_size)
        for i, (width, pad) in enumerate(zip(self.features, pads, strict=True)):
            x = Conv2D(width, k, padding=pad, impl=self.impl, relu=relu, name=f"conv_{i}")(x)
            x = x if relu else act(x)
            x = pool_layer(self.pool, self.pool_window, self.impl, name=f"pool_{i}")(x)
        x = x.reshape(x.shape[0], -1)  # (B, H' W' C')
        for i, width in enumerate(self.hidden):
            x = Dropout(self.dropout_rate, deterministic=not train)(x) if self.dropout_rate else x
            x = act(nn.Dense(width, name=f"dense_{i}")(x))
        x = Dropout(self.dropout_rate, deterministic=not train)(x) if self.dropout_rate else x
        return nn.Dense(self.num_classes, name="head")(x)  # (B, num_classes)


LeNet5 = functools.partial(
    CNN,
    features=(6, 16),
    kernel_size=5,
    padding=("SAME", "VALID"),
    pool="avg",
    hidden=(120, 84),
    activation="tanh",
)
LeNet5.__doc__ = "LeNet-5 on 28x28: conv5(6, SAME)-avgpool-conv5(16)-avgpool-120-84-classes, tanh."

MODELS = {"cnn": CNN, "lenet5": LeNet5}
