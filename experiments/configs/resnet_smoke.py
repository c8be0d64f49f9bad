"""Smoke test of the resnet family: a width-4 ResNet-18 layout (one block per stage) with the CIFAR
stem on the 8x8 digits, 20 steps; --config.model.name=resnet50 tries the bottleneck blocks."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "resnet18"
    c.model.stage_sizes = (1, 1, 1, 1)
    c.model.width = 4
    c.model.cifar_stem = True
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 20
    c.log_every_steps = 10
    c.eval_every_steps = 20
    c.checkpoint_every_steps = 10
    c.progress_bar = False
    return c
