"""The Dataset record every loader returns, an in-memory source, and where shared data lives."""

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test random-access sources plus the per-example functions that make batches."""

    name: str
    train: Any  # len() and [i] -> dict of numpy arrays
    test: Any
    num_classes: int
    preprocess: Callable[[dict], dict]  # example -> {"inputs", "targets"}
    augment: Callable[[dict, np.random.Generator], dict] | None = None  # training only
    assets: dict = dataclasses.field(default_factory=dict)  # JSON-able, saved with checkpoints

    def example_batch(self, size: int = 1) -> dict:
        """The first `size` preprocessed training examples stacked: shapes for model.init."""
        examples = [self.preprocess(self.train[i]) for i in range(size)]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class ArraySource:
    """A random-access source over equal-length numpy arrays: source[i] -> {name: array[i]}."""

    def __init__(self, **arrays: np.ndarray):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"ArraySource arrays differ in length: {lengths}")
        self.arrays = arrays
        self._len = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i) -> dict:
        return {k: v[i] for k, v in self.arrays.items()}

    def __repr__(self) -> str:
        shapes = {k: v.shape for k, v in self.arrays.items()}
        return f"ArraySource({shapes})"


def shared_data_dir() -> pathlib.Path | None:
    """$DLKIT_SHARED_DATA, else ../shared/data beside the repo (or the cwd), if it exists."""
    candidates = [os.environ.get("DLKIT_SHARED_DATA")]
    candidates.append(pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
    candidates.append(pathlib.Path.cwd() / ".." / "shared" / "data")
    for c in candidates:
        if c and pathlib.Path(c).is_dir():
            return pathlib.Path(c).resolve()
    return None


def tfds_data_dir(data_config) -> str:
    """config.data.tfds_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    configured = data_config.get("tfds_dir") if data_config is not None else None
    return str(
        configured or os.environ.get("TFDS_DATA_DIR") or pathlib.Path.home() / "tensorflow_datasets"
    )
