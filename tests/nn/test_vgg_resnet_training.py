"""BatchNorm and dropout through the one loop: exact resume, and augmented CIFAR (mocked TFDS)."""

import jax
import numpy as np
import tensorflow_datasets as tfds

from dlkit.train import restore_latest, train_and_evaluate
from dlkit.train.config import default_config


def tiny_config(model: dict, data: dict, **over):
    c = default_config()
    c.model.update(model)
    c.data.update(data)
    c.batch_size = 8
    c.num_train_steps = 8
    c.log_every_steps = 3  # not a divisor of the checkpoint interval
    c.eval_every_steps = 8
    c.checkpoint_every_steps = 4
    c.progress_bar = False
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    for k, v in over.items():
        c[k] = v
    return c


def assert_resume_is_exact(tmp_path, config):
    full, split = tmp_path / "full", tmp_path / "split"
    m_full = train_and_evaluate(config, full)
    train_and_evaluate(config, split, stop_after_step=5)
    m_split = train_and_evaluate(config, split)
    a = restore_latest(full, items=("state",))
    b = restore_latest(split, items=("state",))
    assert a["step"] == b["step"] == config.num_train_steps
    assert "batch_stats" in a["state"]["model_state"]
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert m_full == m_split
    return a


def test_resume_is_bitwise_exact_with_batchnorm_and_dropout(tmp_path):
    vgg = dict(name="vgg11_bn", depths=(1, 1, 1), widths=(4, 8, 8), hidden=16, pool_size=1)
    config = tiny_config(vgg, dict(name="digits"))
    saved = assert_resume_is_exact(tmp_path, config)
    init = jax.tree.leaves(saved["state"]["model_state"]["batch_stats"])
    assert any(np.abs(np.asarray(v)).sum() > 0 for v in init)  # the running means moved


def test_resume_is_exact_on_augmented_cifar10(tmp_path):
    resnet = dict(name="resnet18", stage_sizes=(1, 1), width=4, cifar_stem=True)
    data = dict(name="cifar10", tfds_dir=str(tmp_path / "tfds"), augment=True)
    with tfds.testing.mock_data(num_examples=20):
        assert_resume_is_exact(tmp_path, tiny_config(resnet, data))
