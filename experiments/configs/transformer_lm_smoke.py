"""Smoke test: a tiny transformer_lm on pydoc topics for a few steps (seconds on a CPU)."""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "transformer_lm"
    c.model.embed_dim = 16
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.num_kv_heads = 1
    c.model.mlp_dim = 32
    c.model.max_len = 32
    c.model.dropout_rate = 0.1
    c.model.positional = "rope"
    c.model.tie_embeddings = True
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
