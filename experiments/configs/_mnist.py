"""Base of the MNIST configs (not a config itself): the shared 8,000 / 2,000 split by default
(data.dir unset and no prepared TFDS mnist, or any directory of idx files via data.dir), batch 128,
a warmup-cosine schedule with evaluations and checkpoints every 500 steps."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.data.name = "mnist"
    c.batch_size = 128
    c.optimizer.update(learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=100)
    return c
