"""LeNet-5 (conv5(6)-avgpool-conv5(16)-avgpool-120-84, tanh) on MNIST (shared split by default)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mnist")
    c.model.name = "lenet5"
    c.num_train_steps = 2000
    return c
