"""Smoke test of the cnn family: a tiny cnn (fast path) with dropout on the 8x8 digits, 20 steps."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "cnn"
    c.model.features = (4, 8)
    c.model.hidden = (16,)
    c.model.dropout_rate = 0.1
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 20
    c.log_every_steps = 10
    c.eval_every_steps = 20
    c.checkpoint_every_steps = 10
    c.progress_bar = False
    return c
