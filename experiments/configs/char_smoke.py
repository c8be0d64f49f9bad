"""Smoke test: a tiny character LM on pydoc topics for a few steps (seconds on a CPU).

The cell is the config argument: `--config=experiments/configs/char_smoke.py:gru` (lstm, gru, rnn).
"""

from dlkit import errors
from dlkit.extras.configs import sibling

MODELS = {"lstm": "char_lstm", "gru": "char_gru", "rnn": "char_rnn"}


def get_config(cell: str = "lstm"):
    name = errors.choose(MODELS, cell, "char_smoke.py cell (after ':')")
    c = sibling(__file__, "_smoke_text")
    c.model.update(name=name, hidden_size=32, num_layers=2, embed_dim=16)
    return c
