"""The notes' MLP 784 -> 128 -> 64 -> 10 (ReLU) on MNIST: the shared 8,000 / 2,000 split by default
(data.dir unset and no prepared TFDS mnist), or any directory of idx files via --config.data.dir."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (128, 64)
    c.model.activation = "relu"
    c.model.dropout_rate = 0.2
    c.data.name = "mnist"
    c.batch_size = 128
    c.num_train_steps = 3000
    c.log_every_steps = 200
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    return c
