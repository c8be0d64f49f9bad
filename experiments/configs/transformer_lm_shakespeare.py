"""Character-level decoder-only Transformer (rotary positions, tied embeddings) on Tiny Shakespeare.

Sample with experiments/sample.py (KV-cache decoding); rotary positions put no limit on the length.
"""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.update(name="transformer_lm", embed_dim=128, num_layers=4, num_heads=4, mlp_dim=512)
    c.model.update(max_len=128, dropout_rate=0.1, positional="rope", tie_embeddings=True)
    c.model.implementation = "auto"
    c.data.update(name="tiny_shakespeare", seq_len=128, train_stride=32, eval_fraction=0.1)
    c.data.path = config_dict.placeholder(str)
    c.update(batch_size=32, eval_batch_size=128, num_train_steps=3000, log_every_steps=100)
    c.optimizer.update(name="adamw", learning_rate=2e-3, weight_decay=0.01, grad_clip_norm=1.0)
    c.optimizer.update(schedule="warmup_cosine", warmup_steps=100)
    return c
