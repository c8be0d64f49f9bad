"""Char simple RNN (tanh) on Tiny Shakespeare: wider, lower learning rate, tight clipping."""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "char_rnn"
    c.model.hidden_size = 512
    c.model.num_layers = 1
    c.model.embed_dim = 64
    c.model.dropout_rate = 0.0
    c.data.name = "tiny_shakespeare"
    c.data.path = config_dict.placeholder(str)
    c.data.seq_len = 64  # shorter windows: a tanh RNN's gradients fade over long ones anyway
    c.data.train_stride = 8
    c.data.eval_fraction = 0.1
    c.data.eval_context = 128  # held-out windows: 128 warm-up characters, then the scored ones
    c.batch_size = 64
    c.eval_batch_size = 128
    c.steps_per_call = 10  # 10 steps per dispatch: same results, faster on CPU (BUILD_NOTES)
    c.parallel.cpu_devices = 2  # CPU: two half-batches run side by side (BUILD_NOTES)
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 250
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip_norm = 0.5
    return c
