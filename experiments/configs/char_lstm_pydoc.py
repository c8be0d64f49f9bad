"""The sequence chapter's default: a 2-layer LSTM character model on CPython's pydoc topics."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "char_lstm_shakespeare")
    c.data.name = "pydoc"
    c.data.train_stride = 32  # windows start every 32 characters: more distinct windows
    c.update(num_train_steps=3000, log_every_steps=100)
    c.optimizer.update(learning_rate=3e-3, warmup_steps=100)
    return c
