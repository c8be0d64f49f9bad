"""The sequence chapter's default: a 2-layer LSTM character model on CPython's pydoc topics."""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "char_lstm"
    c.model.hidden_size = 256
    c.model.num_layers = 2
    c.model.embed_dim = 64
    c.model.dropout_rate = 0.0
    c.data.name = "pydoc"
    c.data.seq_len = 128
    c.data.train_stride = 32  # windows start every 32 characters: more distinct windows
    c.data.eval_fraction = 0.1
    c.data.eval_context = 128  # held-out windows: 128 warm-up characters, then the scored ones
    c.data.path = config_dict.placeholder(str)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.steps_per_call = 10  # 10 steps per dispatch: same results, faster on CPU (BUILD_NOTES)
    c.parallel.cpu_devices = 2  # CPU: two half-batches run side by side (BUILD_NOTES)
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip_norm = 1.0
    return c
