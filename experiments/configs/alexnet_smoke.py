"""Smoke test of the alexnet family: a narrow AlexNet (inputs resized to 64x64, dropout 0.5) on the
8x8 digits, 20 steps."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke")
    c.model.update(name="alexnet", features=(4, 8, 8, 8, 8), hidden=16, input_size=64)
    return c
