"""Smoke test of the cnn family: a tiny cnn (fast path) with dropout on the 8x8 digits, 20 steps."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke")
    c.model.update(name="cnn", features=(4, 8), hidden=(16,), dropout_rate=0.1)
    return c
