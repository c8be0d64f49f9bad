"""The notes' MLP on digits with DP-SGD: per-example gradients clipped to norm 1, Gaussian noise
of std noise_multiplier * clip_norm added to their sum, plain SGD (as in Abadi et al. 2016)."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (128, 64)
    c.data.name = "digits"
    c.batch_size = 64
    c.num_train_steps = 1500
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "cosine"
    c.dp.enabled = True
    c.dp.clip_norm = 1.0
    c.dp.noise_multiplier = 1.1
    c.batch_size = 128
    c.num_train_steps = 1000
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.5
    c.optimizer.schedule = "constant"
    return c
