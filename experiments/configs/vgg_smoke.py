"""Smoke test of the vgg family: a three-stage, narrow VGG with BatchNorm and dropout on the 8x8
digits (8 -> 4 -> 2 -> 1 after the pools), 20 steps."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "vgg11_bn"
    c.model.depths = (1, 2, 1)
    c.model.widths = (4, 8, 8)
    c.model.hidden = 16
    c.model.pool_size = 1
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 20
    c.log_every_steps = 10
    c.eval_every_steps = 20
    c.checkpoint_every_steps = 10
    c.progress_bar = False
    return c
