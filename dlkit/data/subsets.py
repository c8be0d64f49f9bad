"""Class and size subsets of any dataset, set in the data config and applied by dlkit.data.load.

data.classes = (5, 6, 7, 8, 9)   keep examples with these labels (train and test)
data.relabel = True              classes[i] -> i, num_classes = len(classes) (default with classes)
data.num_train_examples = 100    a seeded (config.data.subset_seed, default 0) train subset
"""

import dataclasses

import numpy as np

from dlkit.errors import ConfigError


class IndexedSource:
    """source restricted to `indices`: len() = len(indices), [i] -> source[indices[i]]."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[int(self.indices[i])]

    def __repr__(self) -> str:
        return f"IndexedSource({len(self)} of {self.source!r})"


def targets_of(dataset, source) -> np.ndarray:
    """Every example's label (N,): the raw "label" (or an ArraySource array), else preprocess."""
    arrays = getattr(source, "arrays", None)
    if arrays is not None and "label" in arrays:
        return np.asarray(arrays["label"])
    first = source[0] if len(source) else {}
    if "label" in first:
        return np.asarray([source[i]["label"] for i in range(len(source))])
    return np.asarray([dataset.preprocess(source[i])["targets"] for i in range(len(source))])


def _relabeled(preprocess, lookup: np.ndarray):
    def fn(example):
        out = preprocess(example)
        return {**out, "targets": lookup[out["targets"]].astype(np.int32)}

    return fn


def apply(dataset, data_config):
    """The dataset restricted to data.classes (relabelled) and data.num_train_examples."""
    get = data_config.get
    classes, size = get("classes"), get("num_train_examples")
    if classes is None and size is None:
        return dataset
    train, test, preprocess, num_classes = dataset.train, dataset.test, dataset.preprocess, None
    if classes is not None:
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < dataset.num_classes]
        if bad or len(set(classes)) != len(classes) or not classes:
            raise ConfigError(
                f"data.classes {classes} must be distinct labels in [0, {dataset.num_classes})"
            )
        keep = {
            s: np.flatnonzero(np.isin(targets_of(dataset, src), classes))
            for s, src in (("train", train), ("test", test))
        }
        train, test = IndexedSource(train, keep["train"]), IndexedSource(test, keep["test"])
        if get("relabel") is None or get("relabel"):
            lookup = np.full(dataset.num_classes, -1, np.int64)
            lookup[classes] = np.arange(len(classes))
            preprocess, num_classes = _relabeled(preprocess, lookup), len(classes)
    if size is not None:
        if not 0 < size <= len(train):
            raise ConfigError(
                f"data.num_train_examples={size} must be in [1, {len(train)}] for this split"
            )
        rng = np.random.default_rng(get("subset_seed") or 0)
        train = IndexedSource(train, np.sort(rng.permutation(len(train))[:size]))
    return dataclasses.replace(
        dataset,
        train=train,
        test=test,
        preprocess=preprocess,
        num_classes=num_classes or dataset.num_classes,
    )
