import gzip
import struct

import numpy as np
import pytest

from dlkit import data
from dlkit.data.images import mnist_from_idx, read_idx
from dlkit.errors import ConfigError


def test_digits_is_prepared_offline_and_split():
    ds = data.load({"name": "digits"})
    assert (len(ds.train), len(ds.test), ds.num_classes) == (1437, 360, 10)
    ex = ds.preprocess(ds.train[0])
    assert ex["inputs"].shape == (8, 8, 1) and ex["inputs"].dtype == np.float32
    assert 0.0 <= ex["inputs"].min() and ex["inputs"].max() <= 1.0


def test_train_iterator_is_deterministic_and_resumable():
    ds = data.load({"name": "digits"})
    it = data.train_iterator(ds, 32, seed=3)
    for _ in range(50):  # past the first epoch (44 batches)
        next(it)
    state = it.get_state()
    expected = [next(it)["targets"] for _ in range(3)]
    again = data.train_iterator(ds, 32, seed=3)
    again.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(next(again)["targets"], e)
    other = data.train_iterator(ds, 32, seed=4)
    first = data.train_iterator(ds, 32, seed=3)
    assert not np.array_equal(next(other)["targets"], next(first)["targets"])


def test_reading_ahead_on_threads_changes_neither_order_nor_resume_state():
    """read_threads > 0 (Grain's thread prefetch) gives the batches and states of the default."""
    ds = data.load({"name": "digits"})
    plain = data.train_iterator(ds, 32, seed=3)
    ahead = data.train_iterator(ds, 32, seed=3, read_threads=4)
    for _ in range(47):  # across the epoch boundary
        np.testing.assert_array_equal(next(ahead)["inputs"], next(plain)["inputs"])
    assert ahead.get_state() == plain.get_state()
    resumed = data.train_iterator(ds, 32, seed=3)
    resumed.set_state(ahead.get_state())  # a state saved by a reading-ahead run
    np.testing.assert_array_equal(next(resumed)["targets"], next(plain)["targets"])


def test_eval_batches_cover_the_split_once_with_a_mask():
    ds = data.load({"name": "digits"})
    batches = data.eval_batches(ds, 100)
    assert len(batches) == 4 and all(b["inputs"].shape == (100, 8, 8, 1) for b in batches)
    assert sum(float(b["mask"].sum()) for b in batches) == 360
    assert batches[-1]["mask"][60:].sum() == 0


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_reader_and_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (10, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    train, test = mnist_from_idx(tmp_path, num_train=8)
    assert (len(train), len(test)) == (8, 2)
    assert test[1]["label"] == 9 and train[0]["image"].shape == (28, 28, 1)


def test_mnist_missing_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset 'mnist'.*--config.data.dir"):
        data.load({"name": "mnist", "dir": str(tmp_path / "nowhere")})


def test_unknown_dataset_lists_choices():
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset 'cifar1000' \(did you mean 'cifar10'\?\); choose one of: .*digits",
    ):
        data.load({"name": "cifar1000"})


def test_shared_mnist_split(shared_data):
    ds = data.load({"name": "mnist", "dir": str(shared_data / "mnist")})
    assert (len(ds.train), len(ds.test)) == (8000, 2000)
    labels = np.concatenate([ds.train.arrays["label"], ds.test.arrays["label"]])
    np.testing.assert_array_equal(
        np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
