"""The notes' MLP on digits as an ensemble of 5 members (seeds seed .. seed + 4) trained together
by one vmapped step; eval metrics are the ensemble's (log of the mean of the members' softmax)."""

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
    c.ensemble_size = 5
    c.model.dropout_rate = 0.1
    return c
