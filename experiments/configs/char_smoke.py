"""Smoke test: a tiny character LM on pydoc topics for a few steps (seconds on a CPU).

The cell is the config argument: `--config=experiments/configs/char_smoke.py:gru` (lstm, gru, rnn).
"""

from ml_collections import config_dict

from dlkit.errors import ConfigError
from dlkit.train.config import default_config


def get_config(cell: str = "lstm"):
    if cell not in ("lstm", "gru", "rnn"):
        raise ConfigError(f"char_smoke.py takes lstm, gru or rnn after ':', got {cell!r}")
    c = default_config()
    c.model.name = f"char_{cell}"
    c.model.hidden_size = 32
    c.model.num_layers = 2
    c.model.embed_dim = 16
    c.data.name = "pydoc"
    c.data.seq_len = 32
    c.data.train_stride = 32
    c.data.eval_fraction = 0.01
    c.data.path = config_dict.placeholder(str)
    c.batch_size = 8
    c.eval_batch_size = 64
    c.num_train_steps = 20
    c.log_every_steps = 10
    c.eval_every_steps = 20
    c.checkpoint_every_steps = 10
    c.progress_bar = False
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.grad_clip_norm = 1.0
    return c
