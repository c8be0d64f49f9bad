"""The default experiment: the notes' MLP (ReLU, 128 -> 64) on scikit-learn's 8x8 digits."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (128, 64)
    c.model.activation = "relu"
    c.data.name = "digits"
    c.batch_size = 64
    c.num_train_steps = 1500
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "cosine"
    return c
