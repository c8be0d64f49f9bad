"""Char LSTM on Tiny Shakespeare: held-out loss <= 1.50 nats/char within 15 minutes on 2 CPU cores.

  python experiments/train.py --config=experiments/configs/char_lstm_shakespeare.py \
      --workdir=workdirs/char_lstm_shakespeare
  python experiments/sample.py --workdir=workdirs/char_lstm_shakespeare --prompt="ROMEO:"
"""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "char_lstm"
    c.model.hidden_size = 256
    c.model.num_layers = 2
    c.model.embed_dim = 64
    c.model.dropout_rate = 0.0
    c.data.name = "tiny_shakespeare"
    c.data.path = config_dict.placeholder(str)  # default: <shared data>/tinyshakespeare/input.txt
    c.data.seq_len = 128
    c.data.train_stride = 8  # a window starts every 8 characters: ~125k distinct windows
    c.data.eval_fraction = 0.1  # the last 10% (111,540 characters) is held out
    c.data.eval_context = 128  # held-out windows: 128 warm-up characters, then the scored ones
    c.batch_size = 32
    c.eval_batch_size = 128
    c.steps_per_call = 10  # 10 steps per dispatch: same results, faster on CPU (BUILD_NOTES)
    c.parallel.cpu_devices = 2  # CPU: two half-batches run side by side (BUILD_NOTES)
    c.num_train_steps = 2500
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-2
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 20
    c.optimizer.grad_clip_norm = 1.0
    return c
