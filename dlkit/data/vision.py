"""Fashion-MNIST and CIFAR-10 through TFDS data sources, per-channel normalization, and the
CIFAR augmentation (random crop with zero padding, horizontal flip) as the Dataset `augment` hook.

The sources are TFDS `ArrayRecordDataSource`s read with download=False (a prepared array_record
copy under data.tfds_dir); data.download=True lets TFDS download and prepare one first.
"""

import functools

import numpy as np

from dlkit.data.dataset import Dataset, tfds_data_dir
from dlkit.errors import ConfigError

# Per-channel mean and standard deviation of the training images scaled to [0, 1].
CHANNEL_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def channel_stats(source, num: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean (C,), std (C,)) of source[i]["image"] / 255 over the first `num` examples (all)."""
    n = len(source) if num is None else min(num, len(source))
    images = np.stack([source[i]["image"] for i in range(n)]).astype(np.float64) / 255.0
    return images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2))


def normalize(example: dict, mean, std) -> dict:
    """inputs = (image / 255 - mean_c) / std_c, float32 (H, W, C); targets = label, int32."""
    image = example["image"].astype(np.float32) / 255.0
    inputs = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return {"inputs": inputs, "targets": np.asarray(example["label"], np.int32)}


def random_crop_flip(example: dict, rng: np.random.Generator, padding: int = 4, flip: bool = True):
    """Zero-pads the (H, W, C) image by `padding`, crops a random H x W window, then mirrors it
    left-right with probability 1/2. `rng` is Grain's per-example generator (exact resume)."""
    image = example["image"]
    h, w = image.shape[:2]
    if padding:
        padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
        top, left = rng.integers(0, 2 * padding + 1, size=2)
        image = padded[top : top + h, left : left + w]
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    return {**example, "image": np.ascontiguousarray(image)}


def tfds_sources(name: str, data_config) -> tuple:
    """(train, test) TFDS array_record data sources for `name`, or a ConfigError saying how to
    prepare them."""
    import tensorflow_datasets as tfds

    data_dir = tfds_data_dir(data_config)
    download = bool(data_config.get("download", False))
    kwargs = {"builder_kwargs": {"file_format": "array_record"}} if download else {}
    try:
        return tuple(
            tfds.data_source(name, split=split, data_dir=data_dir, download=download, **kwargs)
            for split in ("train", "test")
        )
    except Exception as e:  # TFDS raises several types for "not prepared"
        raise ConfigError(
            f"dataset {name!r} is not prepared as TFDS array_record in {data_dir} "
            f"({type(e).__name__}); prepare it with `tfds build {name} --file_format=array_record "
            f"--data_dir={data_dir}`, point --config.data.tfds_dir at a prepared copy, or set "
            "--config.data.download=True where the network is reachable"
        ) from e


def load_vision(name: str, data_config) -> Dataset:
    """A normalized TFDS image dataset; training examples are augmented if data.augment."""
    train, test = tfds_sources(name, data_config)
    mean, std = CHANNEL_STATS[name] if data_config.get("normalize", True) else ((0.0,), (1.0,))
    augment = None
    if data_config.get("augment", name == "cifar10"):
        padding = data_config.get("crop_padding", 4)
        flip = data_config.get("flip", name == "cifar10")
        augment = functools.partial(random_crop_flip, padding=padding, flip=flip)
    preprocess = functools.partial(normalize, mean=mean, std=std)
    return Dataset(name, train, test, 10, preprocess, augment)


DATASETS = {
    "fashion_mnist": functools.partial(load_vision, "fashion_mnist"),
    "cifar10": functools.partial(load_vision, "cifar10"),
}
