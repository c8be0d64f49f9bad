"""Character-level decoder-only Transformer (rotary positions, tied embeddings) on Tiny Shakespeare.

Sample with experiments/sample.py (KV-cache decoding); rotary positions put no limit on the length.
"""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "transformer_lm"
    c.model.embed_dim = 128
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 512
    c.model.max_len = 128
    c.model.dropout_rate = 0.1
    c.model.positional = "rope"
    c.model.tie_embeddings = True
    c.model.implementation = "auto"
    c.data.name = "tiny_shakespeare"
    c.data.seq_len = 128
    c.data.train_stride = 32
    c.data.eval_fraction = 0.1
    c.data.path = config_dict.placeholder(str)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.01
    c.optimizer.grad_clip_norm = 1.0
    return c
