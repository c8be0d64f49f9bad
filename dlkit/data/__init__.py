"""Datasets by name, Grain pipelines and tokenizers. TFDS and Grain load only when used."""

import functools
import importlib

from dlkit.data import preprocessing, subsets
from dlkit.data.dataset import ArraySource, Dataset, shared_data_dir, tfds_data_dir
from dlkit.data.pipeline import eval_batches, pad_batch, stack_examples, train_iterator
from dlkit.errors import ConfigError, choose

_DATASET_MODULES = (
    "dlkit.data.images",
    "dlkit.data.vision",
    "dlkit.data.text",
)


@functools.cache
def registry() -> dict:
    """name -> loader(data_config) -> Dataset, merged from every dataset module."""
    merged = {}
    for module in _DATASET_MODULES:
        for name, loader in importlib.import_module(module).DATASETS.items():
            if name in merged:
                raise RuntimeError(f"dataset name {name!r} registered twice ({module})")
            merged[name] = loader
    return merged


def names() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(registry())


def load(data_config) -> Dataset:
    """Builds the dataset named by data_config.name (a ConfigDict or dict)."""
    name = data_config.get("name") if hasattr(data_config, "get") else None
    if not name:
        raise ConfigError(f"the data config needs a 'name'; choose one of: {', '.join(names())}")
    builder = choose(registry(), name, "dataset")
    dataset = preprocessing.apply(builder(data_config), data_config)  # data.preprocess
    return subsets.apply(dataset, data_config)  # data.classes etc.


__all__ = [  # in the order of docs/API.md
    "load",
    "names",
    "registry",
    "Dataset",
    "ArraySource",
    "train_iterator",
    "eval_batches",
    "pad_batch",
    "stack_examples",
    "shared_data_dir",
    "tfds_data_dir",
]
