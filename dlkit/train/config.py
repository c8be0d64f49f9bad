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
    c.nonfinite = "stop"  # non-finite loss/grads: stop (exit 1, name the step) | skip_step
    c.preemption_signals = ("SIGTERM", "SIGINT", "SIGUSR1")  # save at the step, exit 75
    c.init_from = config_dict.placeholder(str)
    c.init_skip = config_dict.placeholder(tuple)  # regexes kept fresh (e.g. ("head/.*",))
    c.init_rename = config_dict.placeholder(tuple)  # ("old_regex->replacement", ...) on ckpt paths
    c.freeze = config_dict.placeholder(tuple)  # regexes of params (and state) not trained
    c.backbone_lr_scale = config_dict.placeholder(float)  # lr factor for non-init_skip params
    c.init_vectors = config_dict.placeholder(str)  # word2vec vectors.npz (or its workdir)
    c.init_vectors_param = config_dict.placeholder(str)  # the table they set: "embed/embedding"
    c.steps_per_call = 1  # train steps per dispatch (lax.scan over K batches); same results
    c.grad_accum_steps = 1  # micro-batches per step (lax.scan); equals the large-batch step
    c.mixed_precision = False  # bf16 compute; fp32 params and optimizer state
    c.ensemble_size = 1  # K members, seeds seed .. seed + K - 1, one vmapped step
    c.dp = ml_collections.ConfigDict({"enabled": False, "clip_norm": 1.0, "noise_multiplier": 1.0})
    c.parallel = ml_collections.ConfigDict()
    c.parallel.kind = "sharded"  # sharded | fsdp | pmap | none (dlkit.train.parallel)
    # CPU: split the host into N JAX devices (data parallel over cores); experiments/train.py
    # applies it before JAX starts (elsewhere: jax.config.update("jax_num_cpu_devices", N)).
    c.parallel.cpu_devices = 0  # 0: JAX's default (one CPU device)
    c.parallel.coordinator_address = config_dict.placeholder(str)  # multi-host "host:port"
    c.parallel.num_processes = config_dict.placeholder(int)
    c.parallel.process_id = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict({"name": "mlp"})

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.dir = config_dict.placeholder(str)  # a directory of raw files (e.g. MNIST idx)
    c.data.tfds_dir = config_dict.placeholder(str)  # TFDS data_dir; default $TFDS_DATA_DIR or ~/
    c.data.classes = config_dict.placeholder(tuple)  # keep these labels only (dlkit.data.subsets)
    c.data.relabel = config_dict.placeholder(bool)  # classes[i] -> i (default True with classes)
    c.data.num_train_examples = config_dict.placeholder(int)  # a seeded subset of the train split
    c.data.subset_seed = config_dict.placeholder(int)  # which examples (default 0)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    return c


# ---------------------------------------------------------------------------- validation

# (path, smallest allowed value): sizes and counts a run cannot use below that.
_AT_LEAST = (
    ("batch_size", 1),
    ("eval_batch_size", 1),
    ("num_train_steps", 0),
    ("log_every_steps", 0),
    ("eval_every_steps", 0),
    ("checkpoint_every_steps", 0),
    ("max_checkpoints_to_keep", 1),
    ("steps_per_call", 1),
    ("grad_accum_steps", 1),
    ("ensemble_size", 1),
    ("parallel.cpu_devices", 0),
    ("optimizer.warmup_steps", 0),
    ("optimizer.grad_clip_norm", 0),
    ("optimizer.learning_rate", 0),
    ("data.num_train_examples", 1),
    ("data.seq_len", 1),
)


def _get(config, path: str):
    node = config
    for key in path.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(key)
    return node


def validate(config, dataset=None) -> None:
    """Raises ConfigError naming the first setting a run cannot use (sizes, counts, a batch
    larger than the dataset's training split); called once at the door, before any work."""
    import math

    from dlkit.errors import ConfigError

    for path, least in _AT_LEAST:
        value = _get(config, path)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config {path} = {value!r} must be a number; fix --config.{path}")
        if not math.isfinite(value) or value < least:
            need = "a positive number" if least == 1 else f"a finite number >= {least}"
            raise ConfigError(f"config {path} = {value!r} must be {need}; fix --config.{path}")
    if dataset is not None:
        n = len(dataset.train)
        if config.batch_size > n:
            raise ConfigError(
                f"batch_size {config.batch_size} exceeds the {n} training examples of "
                f"{dataset.name!r}; lower --config.batch_size"
            )
