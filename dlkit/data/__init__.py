"""Datasets by name, Grain pipelines and tokenizers. TFDS and Grain load only when used."""

import functools
import importlib

from dlkit import errors
from dlkit.data import subsets
from dlkit.data.dataset import ArraySource, Dataset, shared_data_dir, tfds_data_dir
from dlkit.data.pipeline import eval_batches, pad_batch, stack_examples, train_iterator

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
    loader = errors.choose(dict(sorted(registry().items())), data_config["name"], "dataset")
    return subsets.apply(loader(data_config), data_config)  # data.classes etc.


__all__ = [
    "ArraySource",
    "Dataset",
    "eval_batches",
    "load",
    "names",
    "pad_batch",
    "registry",
    "shared_data_dir",
    "stack_examples",
    "tfds_data_dir",
    "train_iterator",
]
