"""Every config in experiments/configs/ trains one step in-process (train_and_evaluate) on tiny
data: the digits as they are; MNIST from tiny idx files; CIFAR-10 / Fashion-MNIST (TFDS, not
available offline) from in-memory arrays of the same shapes through the same loader; text configs
on a short text file with their own window settings. Model settings stay the config's own.
Configs that a binary test already trains as shipped (ELSEWHERE) are not trained twice."""

import pathlib
import re

import numpy as np
import pytest

from dlkit.data import vision
from dlkit.data.dataset import ArraySource
from dlkit.extras.configs import get_config
from dlkit.train import train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"
ALL = sorted(p.stem for p in CONFIGS.glob("*.py") if not p.stem.startswith("_"))
# Trained (>= 1 step, model settings as shipped) through a binary by the test file named here.
ELSEWHERE = {
    "char_lstm_shakespeare": "tests/experiments/test_portable_checkpoints.py",
    "char_smoke": "tests/experiments/test_portable_checkpoints.py",
    "cnn_smoke": "tests/nn/test_cnn_training.py",
    "transformer_lm_shakespeare": "tests/experiments/test_portable_checkpoints.py",
    "transformer_lm_smoke": "tests/experiments/test_transformer_lm.py",
}
NAMES = [name for name in ALL if name not in ELSEWHERE]
# Same family, narrower, so that one step stays quick on 2 CPU cores (full sizes: benchmarks/).
SMALLER = {
    "alexnet_cifar10": {"features": (8, 16, 16, 16, 16), "hidden": 32},
    "resnet18_cifar10": {"width": 8, "stage_sizes": (1, 1, 1, 1)},
    "resnet18_mnist32": {"width": 8, "stage_sizes": (1, 1, 1, 1)},
    "resnet50_cifar10": {"width": 8, "stage_sizes": (1, 1, 1, 1)},
    "vgg16_cifar10": {"widths": (8, 16, 16, 16, 16), "hidden": 32},
}
IMAGE_SHAPES = {"cifar10": (32, 32, 3), "fashion_mnist": (28, 28, 1)}
TEXT = "".join(f"{w} the quick brown fox, number {i}: jumps over the lazy dog.\n" for i, w in
               enumerate(["ROMEO", "JULIET", "def f(x):", "class A:"] * 40))  # fmt: skip


def tiny_sources(name, data_config):
    """In-memory (train, test) in TFDS's example format for the TFDS image datasets."""
    rng = np.random.default_rng(0)

    def source(n):
        images = rng.integers(0, 256, (n, *IMAGE_SHAPES[name]), dtype=np.uint8)
        return ArraySource(image=images, label=rng.integers(0, 10, n))

    return source(16), source(8)


def write_idx(path, array):
    """A uint8 idx file: magic (0, 0, 8, ndim), big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_mnist(directory):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 8)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return str(directory)


def one_step(config, tmp_path):
    """config set to one step on small batches, with the data swapped for the tiny stand-ins."""
    config.update(num_train_steps=1, batch_size=4, eval_batch_size=16, progress_bar=False)
    config.update(log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1)
    if config.data.name == "mnist":
        config.data.dir = tiny_mnist(tmp_path)
    elif config.data.name in ("pydoc", "tiny_shakespeare"):
        (tmp_path / "text.txt").write_text(TEXT)
        config.data.update(name="text_file", path=str(tmp_path / "text.txt"))
    return config


@pytest.mark.parametrize("name", NAMES)
def test_config_trains_one_step(name, tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "tfds_sources", tiny_sources)
    config = one_step(get_config(CONFIGS / f"{name}.py"), tmp_path)
    config.model.update(SMALLER.get(name, {}))
    metrics = train_and_evaluate(config, tmp_path / "workdir")
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["eval_loss"]), metrics
    assert (tmp_path / "workdir" / "checkpoints").is_dir()


def test_every_config_is_listed():
    assert len(ALL) == 23 and "resnet50_cifar10" in NAMES and "_cifar10" not in ALL
    assert set(ELSEWHERE) < set(ALL) and len(NAMES) == 18


@pytest.mark.parametrize("name", sorted(ELSEWHERE))
def test_configs_not_trained_here_are_trained_by_a_binary_test(name):
    """The test named in ELSEWHERE still runs train.py (or compare_lm.py) on that config."""
    text = (ROOT / ELSEWHERE[name]).read_text()
    assert re.search(rf"\b{name}\b", text) and re.search(r"(train|compare_lm)\.py", text), name
