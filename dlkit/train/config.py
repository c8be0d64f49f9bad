"""The default experiment config: every field the trainer reads, with its default."""

import ml_collections
from ml_collections import config_dict


def default_config() -> ml_collections.ConfigDict:
    """Fields read by train_and_evaluate; experiment configs start from this and override."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.loss = "cross_entropy"
    c.batch_size = 64
    c.eval_batch_size = 256
    c.num_train_steps = 1000
    c.log_every_steps = 100
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.max_checkpoints_to_keep = 3
    c.progress_bar = True
    c.init_from = config_dict.placeholder(str)

    c.model = ml_collections.ConfigDict({"name": "mlp"})

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.dir = config_dict.placeholder(str)  # a directory of raw files (e.g. MNIST idx)
    c.data.tfds_dir = config_dict.placeholder(str)  # TFDS data_dir; default $TFDS_DATA_DIR or ~/

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    return c
