"""LeNet-5 (conv5(6)-avgpool-conv5(16)-avgpool-120-84, tanh) on MNIST (shared split by default)."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "lenet5"
    c.data.name = "mnist"
    c.batch_size = 128
    c.num_train_steps = 2000
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    return c
