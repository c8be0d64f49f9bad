"""Base of the digits MLP configs (not a config itself): the notes' MLP (128 -> 64) on the 8x8
digits, Adam 2e-3 with a cosine schedule over 1500 steps."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.hidden_sizes = (128, 64)
    c.update(num_train_steps=1500)
    c.optimizer.update(learning_rate=2e-3, schedule="cosine")
    return c
