"""The default experiment: the notes' MLP (ReLU, 128 -> 64) on scikit-learn's 8x8 digits."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mlp_digits")
    c.model.activation = "relu"
    return c
