"""Base of the smoke configs (not a config itself): 20 steps on the 8x8 digits, batch 16,
evaluated at the end and checkpointed twice, no progress bar; a variant sets the model."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.data.name = "digits"
    c.update(batch_size=16, num_train_steps=20, progress_bar=False)
    c.update(log_every_steps=10, eval_every_steps=20)
    c.checkpoint.every_steps = 10
    return c
