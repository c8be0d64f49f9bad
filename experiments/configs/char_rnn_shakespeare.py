"""Char simple RNN (tanh) on Tiny Shakespeare: wider, lower learning rate, tight clipping."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "char_lstm_shakespeare")
    c.model.update(name="char_rnn", hidden_size=512, num_layers=1)
    c.data.seq_len = 64  # shorter windows: a tanh RNN's gradients fade over long ones anyway
    c.update(batch_size=64, num_train_steps=2000)
    c.checkpoint.every_steps = 250
    c.optimizer.update(learning_rate=1e-3, warmup_steps=100, grad_clip_norm=0.5)
    return c
