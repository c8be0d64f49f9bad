"""AlexNet as in torchvision: 5 convolutions (11x11 stride 4, 5x5, 3x3 x3), overlapping 3x3/2 max
pools, adaptive average pool to 6x6, dropout 0.5 before each of the first two dense layers."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from dlkit.nn.cnn import Conv2D, MaxPool
from dlkit.nn.dropout import Dropout
from dlkit.ops.conv import adaptive_avg_pool


class AlexNet(nn.Module):
    """x (B, H, W, 3) -> logits (B, num_classes); `input_size` resizes inputs first (e.g. 64 for
    CIFAR's 32x32, which the stride-4 stem and three pools would shrink below one pixel)."""

    num_classes: int = 1000
    features: Sequence[int] = (64, 192, 384, 256, 256)
    hidden: int = 4096
    dropout_rate: float = 0.5
    pool_size: int = 6
    input_size: int | None = None
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"AlexNet expects images (B, H, W, C), got {x.shape}")
        if self.input_size:
            x = jax.image.resize(
                x, (x.shape[0], self.input_size, self.input_size, x.shape[3]), "bilinear"
            )
        f = self.features
        layers = [
            (f[0], 11, 4, 2, True),
            (f[1], 5, 1, 2, True),
            (f[2], 3, 1, 1, False),
            (f[3], 3, 1, 1, False),
            (f[4], 3, 1, 1, True),
        ]  # width, kernel, stride, pad, pool
        for i, (width, k, s, p, pool) in enumerate(layers):
            x = Conv2D(width, (k, k), (s, s), p, impl=self.impl, relu=True, name=f"conv_{i}")(x)
            if pool:
                x = MaxPool((3, 3), (2, 2), impl=self.impl, name=f"pool_{i}")(x)
        x = adaptive_avg_pool(x, self.pool_size).reshape(x.shape[0], -1)  # (B, 6*6*C)
        for i in range(2):
            x = Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(self.hidden, name=f"dense_{i}")(x))
        return nn.Dense(self.num_classes, name="head")(x)


MODELS = {"alexnet": AlexNet}
