"""Smoke test of the alexnet family: a narrow AlexNet (inputs resized to 64x64, dropout 0.5) on the
8x8 digits, 20 steps."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "alexnet"
    c.model.features = (4, 8, 8, 8, 8)
    c.model.hidden = 16
    c.model.input_size = 64
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 20
    c.log_every_steps = 10
    c.eval_every_steps = 20
    c.checkpoint_every_steps = 10
    c.progress_bar = False
    return c
