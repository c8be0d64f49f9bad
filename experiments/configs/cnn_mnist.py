"""The notes' CNN (conv32-pool-conv64-pool-dense256) on MNIST: the shared 8,000 / 2,000 split by
default (or data.dir / a prepared TFDS mnist). Fast CPU conv/pool path (model.impl="fast")."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "cnn"
    c.model.dropout_rate = 0.3
    c.data.name = "mnist"
    c.batch_size = 128
    c.num_train_steps = 1500
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    return c
