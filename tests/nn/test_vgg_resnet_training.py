"""BatchNorm, dropout and augmentation through the one loop: resume stays bitwise exact."""

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


def test_resume_is_bitwise_exact_with_batchnorm_dropout_and_augmentation(tmp_path):
    # vgg11_bn: BatchNorm statistics in model_state, dropout keyed by (rng, step); CIFAR-10
    # (mocked TFDS) with random crops and flips drawn from per-example seeds
    vgg = dict(name="vgg11_bn", depths=(1, 1), widths=(4, 8), hidden=16, pool_size=1)
    data = dict(name="cifar10", tfds_dir=str(tmp_path / "tfds"), augment=True)
    with tfds.testing.mock_data(num_examples=20):
        saved = assert_resume_is_exact(tmp_path, tiny_config(vgg, data))
    stats = saved["state"]["model_state"]["batch_stats"]
    assert all(np.abs(np.asarray(s["mean"])).max() > 0 for s in stats.values())  # moved from 0


def test_resume_is_bitwise_exact_through_the_fused_batchnorm_kernel(tmp_path):
    # ResNet: every BatchNorm through dlkit.ops.batch_norm ("auto": the native CPU kernel where it
    # loads), ReLU and the shortcut fused into it
    resnet = dict(name="resnet18", stage_sizes=(1, 1), width=4, cifar_stem=True)
    data = dict(name="cifar10", tfds_dir=str(tmp_path / "tfds"))
    with tfds.testing.mock_data(num_examples=20):
        saved = assert_resume_is_exact(tmp_path, tiny_config(resnet, data))
    stats = saved["state"]["model_state"]["batch_stats"]
    assert "bn_short" in stats["stage_1_block_0"]
