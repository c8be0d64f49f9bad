"""Softmax regression (logits = W x + b) on the 8x8 digits."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "linear"
    c.num_train_steps = 1500
    c.optimizer.update(learning_rate=1e-2, schedule="cosine")
    return c
