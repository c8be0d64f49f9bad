"""Fashion-MNIST and CIFAR-10 through (mocked) TFDS sources: normalization, augmentation, resume."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dlkit import ConfigError, data
from dlkit.data.vision import CHANNEL_STATS, channel_stats, normalize, random_crop_flip


@pytest.fixture
def mocked():
    with tfds.testing.mock_data(num_examples=24):
        yield


@pytest.mark.parametrize(
    "name, shape, augmented",
    [("fashion_mnist", (28, 28, 1), False), ("cifar10", (32, 32, 3), True)],
)
def test_loads_normalized_examples(mocked, tmp_path, name, shape, augmented):
    ds = data.load({"name": name, "tfds_dir": str(tmp_path)})
    assert (ds.name, ds.num_classes, len(ds.train), len(ds.test)) == (name, 10, 24, 24)
    assert (ds.augment is not None) == augmented
    raw = ds.train[0]
    ex = ds.preprocess(raw)
    assert ex["inputs"].shape == shape and ex["inputs"].dtype == np.float32
    assert ex["targets"].dtype == np.int32 and 0 <= int(ex["targets"]) < 10
    mean, std = CHANNEL_STATS[name]
    np.testing.assert_allclose(
        ex["inputs"] * std + np.asarray(mean), raw["image"] / 255.0, atol=1e-5
    )


def test_normalize_gives_zero_mean_unit_std_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 4, 4, 3)).astype(np.uint8)
    images[..., 2] //= 4  # channels with different statistics
    source = data.ArraySource(image=images, label=np.zeros(50, np.int64))
    mean, std = channel_stats(source)
    out = np.stack([normalize(source[i], mean, std)["inputs"] for i in range(50)])
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
    image = np.arange(5 * 6 * 2, dtype=np.uint8).reshape(5, 6, 2)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    seen_flip = seen_plain = False
    for seed in range(40):
        out = random_crop_flip({"image": image, "label": 3}, np.random.default_rng(seed), padding=2)
        assert out["image"].shape == image.shape and out["label"] == 3
        windows = [padded[t : t + 5, s : s + 6] for t in range(5) for s in range(5)]
        plain = any(np.array_equal(out["image"], w) for w in windows)
        flipped = any(np.array_equal(out["image"], w[:, ::-1]) for w in windows)
        assert plain or flipped
        seen_plain |= plain
        seen_flip |= flipped and not plain
    assert seen_plain and seen_flip
    same = [random_crop_flip({"image": image}, np.random.default_rng(1))["image"] for _ in range(2)]
    np.testing.assert_array_equal(*same)


def test_augmented_pipeline_resumes_exactly(mocked, tmp_path):
    ds = data.load({"name": "cifar10", "tfds_dir": str(tmp_path)})
    it = data.train_iterator(ds, 8, seed=0)
    for _ in range(4):  # past the first epoch (24 examples)
        next(it)
    saved = it.get_state()
    expected = [next(it)["inputs"] for _ in range(3)]
    resumed = data.train_iterator(ds, 8, seed=0)
    resumed.set_state(saved)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["inputs"], want)
    # augmentation really happens: the same example is cropped differently in other epochs
    plain = np.stack([ds.preprocess(ds.train[i])["inputs"] for i in range(len(ds.train))])
    batch = next(data.train_iterator(ds, 8, seed=0))["inputs"]
    assert not all(any(np.array_equal(b, p) for p in plain) for b in batch)


def test_augmentation_can_be_switched(mocked, tmp_path):
    off = data.load({"name": "cifar10", "tfds_dir": str(tmp_path), "augment": False})
    on = data.load({"name": "fashion_mnist", "tfds_dir": str(tmp_path), "augment": True})
    assert off.augment is None and on.augment is not None


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(ConfigError, match=r"'cifar10' is not prepared.*tfds build cifar10"):
        data.load({"name": "cifar10", "tfds_dir": str(tmp_path / "empty")})
