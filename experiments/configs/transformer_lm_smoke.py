"""Smoke test: a tiny transformer_lm on pydoc topics for a few steps (seconds on a CPU)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke_text")
    c.model.update(name="transformer_lm", embed_dim=16, num_layers=2, num_heads=2, num_kv_heads=1)
    c.model.update(mlp_dim=32, max_len=32, dropout_rate=0.1, positional="rope")
    c.model.tie_embeddings = True
    return c
