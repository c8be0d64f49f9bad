"""ResNet-18/34 (basic blocks) and -50/101/152 (bottleneck blocks, stride on the 3x3 conv) as in
torchvision: bias-free convolutions, BatchNorm (scale and bias), residual connections, global
average pooling; `cifar_stem` swaps the 7x7/2 conv and max pool for one 3x3/1 conv."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from dlkit import errors
from dlkit.nn.cnn import Conv2D, MaxPool
from dlkit.nn.norm import BatchNorm

KAIMING = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's conv init


class _Layers(nn.Module):
    """Shared conv and BatchNorm builders (BN momentum 0.9, eps 1e-5 as PyTorch's defaults)."""

    impl: str = "auto"  # the convs' and pool's (dlkit.ops.conv)
    norm_impl: str = "auto"  # the BatchNorms' (dlkit.ops.batch_norm): auto | reference

    def conv(self, width, k, stride=1, name=None):
        pad = "SAME" if stride == 1 else k // 2
        return Conv2D(
            width,
            (k, k),
            (stride, stride),
            pad,
            use_bias=False,
            impl=self.impl,
            kernel_init=KAIMING,
            name=name,
        )

    def bn(self, train, name=None, relu=False):
        return BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            relu=relu,
            impl=self.norm_impl,
            name=name,
        )


class BasicBlock(_Layers):
    """y = relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x)); (B,H,W,C) -> (B,H/s,W/s,width)."""

    width: int = 64
    stride: int = 1
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.width:
            shortcut = self.bn(train, "bn_short")(
                self.conv(self.width, 1, self.stride, "conv_short")(x)
            )
        y = self.bn(train, "bn_0", relu=True)(self.conv(self.width, 3, self.stride, "conv_0")(x))
        y = self.conv(self.width, 3, 1, "conv_1")(y)
        return self.bn(train, "bn_1", relu=True)(y, residual=shortcut)


class Bottleneck(_Layers):
    """y = relu(bn(conv1(relu(bn(conv3_s(relu(bn(conv1(x)))))))) + shortcut(x)); 4*width out."""

    width: int = 64
    stride: int = 1
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        out = self.width * self.expansion
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out:
            shortcut = self.bn(train, "bn_short")(self.conv(out, 1, self.stride, "conv_short")(x))
        y = self.bn(train, "bn_0", relu=True)(self.conv(self.width, 1, 1, "conv_0")(x))
        y = self.bn(train, "bn_1", relu=True)(self.conv(self.width, 3, self.stride, "conv_1")(y))
        y = self.conv(out, 1, 1, "conv_2")(y)
        return self.bn(train, "bn_2", relu=True)(y, residual=shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(_Layers):
    """x (B, H, W, C) -> logits (B, num_classes); stages of blocks with widths w, 2w, 4w, 8w."""

    num_classes: int = 1000
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"  # basic | bottleneck
    width: int = 64
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images (B, H, W, C), got {x.shape}")
        errors.choose(BLOCKS, self.block, "ResNet block")
        if self.cifar_stem:
            x = self.bn(train, "bn_stem", relu=True)(self.conv(self.width, 3, 1, "conv_stem")(x))
        else:
            x = self.bn(train, "bn_stem", relu=True)(self.conv(self.width, 7, 2, "conv_stem")(x))
            x = MaxPool((3, 3), (2, 2), ((1, 1), (1, 1)), impl=self.impl, name="pool_stem")(x)
        for s, n in enumerate(self.stage_sizes):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                x = BLOCKS[self.block](
                    width=self.width * 2**s,
                    stride=stride,
                    impl=self.impl,
                    norm_impl=self.norm_impl,
                    name=f"stage_{s}_block_{i}",
                )(x, train)
        x = x.mean(axis=(1, 2))  # global average pool (B, C)
        return nn.Dense(self.num_classes, name="head")(x)


_V = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"),
    152: ((3, 8, 36, 3), "bottleneck"),
}
MODELS = {
    f"resnet{d}": functools.partial(ResNet, stage_sizes=s, block=b) for d, (s, b) in _V.items()
}
