"""Image datasets that need no download: `digits` (scikit-learn's 8x8 digits through a local TFDS
builder) and `mnist` (a prepared TFDS `mnist`, or a directory of the original idx files)."""

import contextlib
import fcntl
import functools
import gzip
import os
import pathlib

import numpy as np

from dlkit.data.dataset import ArraySource, Dataset, shared_data_dir, tfds_data_dir
from dlkit.errors import ConfigError


def _scale_image(example: dict) -> dict:
    """uint8 image (H, W, C) -> inputs float32 in [0, 1]; label -> int32 target."""
    return {
        "inputs": example["image"].astype(np.float32) / 255.0,
        "targets": np.asarray(example["label"], np.int32),
    }


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    """An exclusive lock so parallel test workers prepare a TFDS dataset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@functools.cache
def _digits_builder_class():
    """Defines the TFDS builder on first use, so `import dlkit.data` does not import TFDS."""
    import tensorflow_datasets as tfds

    class DlkitDigits(tfds.core.GeneratorBasedBuilder):
        """scikit-learn's 1,797 8x8 digits; every 5th example is test (360), the rest train."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="scikit-learn 8x8 digits, 0..16 scaled to uint8.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(False), "test": self._generate_examples(True)}

        def _generate_examples(self, test: bool):
            from sklearn.datasets import load_digits

            d = load_digits()
            images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
            for i in range(len(d.target)):
                if (i % 5 == 0) == test:
                    yield i, {"image": images[i], "label": int(d.target[i])}

    return DlkitDigits


def digits_sources(data_dir: str) -> dict:
    """Prepares (once, offline) and opens the digits TFDS data sources under data_dir."""
    with _file_lock(pathlib.Path(data_dir) / ".dlkit_digits.lock"):  # one preparer at a time
        builder = _digits_builder_class()(data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
    return builder.as_data_source()


def load_digits(data_config) -> Dataset:
    """`digits`: 8x8x1 images, 10 classes, 1,437 train / 360 test, no download needed."""
    src = digits_sources(tfds_data_dir(data_config))
    return Dataset("digits", src["train"], src["test"], 10, _scale_image)


_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads an idx file (optionally .gz): magic (0, 0, dtype, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ConfigError(f"{path} is not a uint8 idx file (magic {raw[:4]!r})")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def mnist_from_idx(directory, num_train: int = 8000) -> tuple[ArraySource, ArraySource]:
    """Train/test sources from idx files; with only the t10k files, the first num_train images
    train and the rest test (the shared data's deterministic 8,000 / 2,000 split)."""
    directory = pathlib.Path(directory)

    def split(name):
        paths = [_find(directory, stem) for stem in _IDX[name]]
        if None in paths:
            return None
        images, labels = (read_idx(p) for p in paths)
        return images[..., None], labels.astype(np.int64)

    test = split("test")
    if test is None:
        raise FileNotFoundError(
            f"no MNIST idx files (t10k-images-idx3-ubyte[.gz], ...) in {directory}"
        )
    train = split("train")
    if train is None:
        (images, labels), cut = test, num_train
        train, test = (images[:cut], labels[:cut]), (images[cut:], labels[cut:])
    return (ArraySource(image=train[0], label=train[1]), ArraySource(image=test[0], label=test[1]))


def load_mnist(data_config) -> Dataset:
    """`mnist`: data.dir of idx files, else a prepared TFDS `mnist`, else the shared split."""
    directory = data_config.get("dir")
    tfds_dir = tfds_data_dir(data_config)
    if not directory:
        prepared = pathlib.Path(tfds_dir) / "mnist"
        if prepared.is_dir():
            import tensorflow_datasets as tfds

            src = tfds.data_source("mnist", data_dir=tfds_dir, download=False)
            return Dataset("mnist", src["train"], src["test"], 10, _scale_image)
        shared = shared_data_dir()
        directory = shared / "mnist" if shared else None
    if directory is None or not os.path.isdir(directory):
        raise ConfigError(
            f"dataset 'mnist' not found: no idx directory ({directory or 'data.dir unset'}), no "
            f"prepared TFDS mnist in {tfds_dir}, no shared data; pass "
            "--config.data.dir=/path/to/mnist_idx_files (e.g. ../shared/data/mnist)"
        )
    try:
        train, test = mnist_from_idx(directory, data_config.get("num_train", 8000) or 8000)
    except FileNotFoundError as e:
        raise ConfigError(
            f"dataset 'mnist': {e}; pass --config.data.dir=<dir with idx files>"
        ) from e
    return Dataset("mnist", train, test, 10, _scale_image)


DATASETS = {"digits": load_digits, "mnist": load_mnist}
