"""VGG-11/13/16/19 as in torchvision (configurations A, B, D, E), with and without BatchNorm:
3x3 SAME convolutions in five stages, 2x2 max pools, adaptive average pool to 7x7, and a
dense-ReLU-dropout classifier."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from dlkit.nn.cnn import Conv2D, MaxPool
from dlkit.nn.dropout import Dropout
from dlkit.nn.norm import BatchNorm
from dlkit.ops.conv import adaptive_avg_pool

DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class VGG(nn.Module):
    """x (B, H, W, C) -> logits (B, num_classes). For 32x32 inputs use pool_size=1, hidden=512."""

    num_classes: int = 1000
    depths: Sequence[int] = DEPTHS[16]  # convs per stage
    widths: Sequence[int] = (64, 128, 256, 512, 512)
    batch_norm: bool = False
    hidden: int = 4096
    pool_size: int = 7
    dropout_rate: float = 0.5
    impl: str = "auto"  # the convs' and pools' (dlkit.ops.conv)
    norm_impl: str = "auto"  # the BatchNorms' (dlkit.ops.batch_norm): auto | reference

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"VGG expects images (B, H, W, C), got {x.shape}")
        for s, (depth, width) in enumerate(zip(self.depths, self.widths, strict=True)):
            for i in range(depth):
                relu = not self.batch_norm  # else BatchNorm then ReLU, fused
                x = Conv2D(width, (3, 3), impl=self.impl, relu=relu, name=f"conv_{s}_{i}")(x)
                if self.batch_norm:
                    x = BatchNorm(
                        use_running_average=not train,
                        momentum=0.9,
                        epsilon=1e-5,
                        relu=True,
                        impl=self.norm_impl,
                        name=f"bn_{s}_{i}",
                    )(x)
            x = MaxPool((2, 2), impl=self.impl, name=f"pool_{s}")(x)
        x = adaptive_avg_pool(x, self.pool_size).reshape(x.shape[0], -1)
        for i in range(2):
            x = nn.relu(nn.Dense(self.hidden, name=f"dense_{i}")(x))
            x = Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


MODELS = {
    f"vgg{d}{'_bn' if bn else ''}": functools.partial(VGG, depths=DEPTHS[d], batch_norm=bn)
    for d in DEPTHS
    for bn in (False, True)
}
