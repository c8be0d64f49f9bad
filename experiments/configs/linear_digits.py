"""Softmax regression (logits = W x + b) on the 8x8 digits."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "linear"
    c.data.name = "digits"
    c.batch_size = 64
    c.num_train_steps = 1500
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-2
    c.optimizer.schedule = "cosine"
    return c
