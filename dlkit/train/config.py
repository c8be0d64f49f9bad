"""The default experiment config (built from dlkit.train.options) and the check at the door."""

import math

import ml_collections
from ml_collections import config_dict

from dlkit.errors import ConfigError
from dlkit.train.options.configdict import add_flat_placeholders, defaults
from dlkit.train.options.sections import RunOptions


def default_config() -> ml_collections.ConfigDict:
    """Every section with its defaults (from dlkit.train.options, the one place they live), the
    data placeholders, and the old flat keys as unset placeholders for one release."""
    c = add_flat_placeholders(defaults())
    c.data.dir = config_dict.placeholder(str)  # a directory of raw files (e.g. MNIST idx)
    c.data.tfds_dir = config_dict.placeholder(str)  # TFDS data_dir; default $TFDS_DATA_DIR or ~/
    c.data.classes = config_dict.placeholder(tuple)  # keep these labels only (dlkit.data.subsets)
    c.data.relabel = config_dict.placeholder(bool)  # classes[i] -> i (default True with classes)
    c.data.num_train_examples = config_dict.placeholder(int)  # a seeded subset of the train split
    c.data.subset_seed = config_dict.placeholder(int)  # which examples (default 0)
    return c


# ---------------------------------------------------------------------------- validation

# Data-section sizes a run cannot use below that (the other sections: dlkit.train.options).
_DATA_AT_LEAST = (("num_train_examples", 1), ("seq_len", 1))


def _check_data(data) -> None:
    """ConfigError naming the first data-section size a run cannot use."""
    for key, least in _DATA_AT_LEAST:
        value = data.get(key) if hasattr(data, "get") else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"config data.{key} = {value!r} must be a number; fix --config.data.{key}"
            )
        if not math.isfinite(value) or value < least:
            raise ConfigError(
                f"config data.{key} = {value!r} must be a positive number; fix --config.data.{key}"
            )


def check_batch_fits(options: RunOptions, dataset) -> None:
    """ConfigError when the batch is larger than the dataset's training split."""
    n = len(dataset.train)
    if options.batch_size > n:
        raise ConfigError(
            f"batch_size {options.batch_size} exceeds the {n} training examples of "
            f"{dataset.name!r}; lower --config.batch_size"
        )


def validate(config, dataset=None) -> RunOptions:
    """The door: RunOptions.from_config(config) (every section checked, defaults filled) plus the
    data section's sizes and, given the dataset, a batch that fits it; one ConfigError line."""
    options = RunOptions.of(config)
    _check_data(options.data)
    if dataset is not None:
        check_batch_fits(options, dataset)
    return options
