"""Char LSTM on Tiny Shakespeare: held-out loss <= 1.50 nats/char within 15 minutes on 2 CPU cores.

  python experiments/train.py --config=experiments/configs/char_lstm_shakespeare.py \
      --workdir=workdirs/char_lstm_shakespeare
  python experiments/sample.py --workdir=workdirs/char_lstm_shakespeare --prompt="ROMEO:"
"""

from ml_collections import config_dict

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.update(name="char_lstm", hidden_size=256, num_layers=2, embed_dim=64, dropout_rate=0.0)
    c.data.name = "tiny_shakespeare"
    c.data.path = config_dict.placeholder(str)  # default: <shared data>/tinyshakespeare/input.txt
    # a window starts every 8 characters: ~125k distinct windows; the last 10% (111,540
    # characters) is held out, scored after 128 warm-up characters
    c.data.update(seq_len=128, train_stride=8, eval_fraction=0.1, eval_context=128)
    c.update(batch_size=32, eval_batch_size=128)
    c.parallel.steps_per_call = (
        10  # 10 steps per dispatch: same results, faster on CPU (BUILD_NOTES)
    )
    c.update(num_train_steps=2500, log_every_steps=50, eval_every_steps=500)
    c.optimizer.update(name="adam", learning_rate=1e-2, grad_clip_norm=1.0)
    c.optimizer.update(schedule="warmup_cosine", warmup_steps=20)
    return c
