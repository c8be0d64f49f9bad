"""Char GRU on Tiny Shakespeare: the LSTM config with the GRU cell."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "char_lstm_shakespeare")
    c.model.name = "char_gru"
    c.update(num_train_steps=1500)
    c.checkpoint.every_steps = 250
    c.optimizer.update(learning_rate=3e-3, warmup_steps=50)
    return c
