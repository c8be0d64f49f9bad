"""Smoke test of the vgg family: a three-stage, narrow VGG with BatchNorm and dropout on the 8x8
digits (8 -> 4 -> 2 -> 1 after the pools), 20 steps."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke")
    c.model.update(name="vgg11_bn", depths=(1, 2, 1), widths=(4, 8, 8), hidden=16, pool_size=1)
    return c
