"""AlexNet, VGG and ResNet: torchvision's parameter counts, shapes, BatchNorm and dropout modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlkit import models
from dlkit.train import create_train_state, make_steps, objectives
from dlkit.train.build import make_optimizer
from dlkit.train.config import default_config

# torchvision's published trainable-parameter counts at 224x224x3, 1000 classes
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def abstract_variables(model, shape):
    """model.init traced abstractly: shapes only, nothing allocated."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def n_params(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_equals_torchvision(name):
    model = models.get(name, num_classes=1000)
    variables = abstract_variables(model, (1, 224, 224, 3))
    assert n_params(variables["params"]) == TORCHVISION_PARAMS[name]
    assert ("batch_stats" in variables) == ("_bn" in name or "resnet" in name)


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "resnet50"])
def test_imagenet_output_shape(name):
    model = models.get(name, num_classes=1000)
    v = abstract_variables(model, (1, 224, 224, 3))
    out = jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.zeros((2, 224, 224, 3)))
    assert out.shape == (2, 1000)


def test_resnet_stem_options_and_structure():
    plain = abstract_variables(models.get("resnet18", num_classes=10), (1, 32, 32, 3))
    cifar = abstract_variables(
        models.get("resnet18", num_classes=10, cifar_stem=True), (1, 32, 32, 3)
    )
    assert plain["params"]["conv_stem"]["kernel"].shape == (7, 7, 3, 64)
    assert cifar["params"]["conv_stem"]["kernel"].shape == (3, 3, 3, 64)
    block = cifar["params"]["stage_1_block_0"]
    assert "bias" not in block["conv_0"] and set(block["bn_0"]) == {"scale", "bias"}
    assert block["conv_short"]["kernel"].shape == (1, 1, 64, 128)  # projection shortcut
    assert "conv_short" not in cifar["params"]["stage_0_block_0"]  # identity shortcut
    r50 = abstract_variables(models.get("resnet50", num_classes=10), (1, 64, 64, 3))
    assert r50["params"]["stage_0_block_0"]["conv_2"]["kernel"].shape == (1, 1, 64, 256)


def tiny(name):
    """Small members of each BatchNorm / dropout family, for 8x8x1 inputs."""
    if name == "resnet":
        return models.get("resnet18", num_classes=10, stage_sizes=(1, 1), width=4, cifar_stem=True)
    if name == "resnet_bottleneck":
        return models.get("resnet50", num_classes=10, stage_sizes=(1, 1), width=2, cifar_stem=True)
    return models.get(
        "vgg11_bn", num_classes=10, depths=(1, 1), widths=(4, 8), hidden=16, pool_size=1
    )


def batch_of(n, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, 8, 8, 1))


@functools.cache
def compiled(name):
    """(model, eval(v, x), eval keeping batch_stats mutable, train(v, x, key) -> (out, update),
    init variables, variables after three training passes); compiled once per model."""
    model = tiny(name)
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    eval_mutable = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["batch_stats"]))
    train = jax.jit(
        lambda v, x, key: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
    )
    x = batch_of(4)
    v0 = v = jax.jit(model.init)(jax.random.key(0), x)
    for i in range(3):  # so that the running statistics are not 0 / 1
        _, upd = train(v, x + i, jax.random.key(i))
        v = {**v, **upd}
    return model, evaluate, eval_mutable, train, v0, v


@pytest.mark.parametrize("name", ["resnet", "vgg_bn"])
def test_eval_output_does_not_depend_on_the_batch(name):
    _, evaluate, _, train, _, v = compiled(name)
    x, other = batch_of(4), batch_of(5, seed=1) * 3.0
    alone = evaluate(v, x)
    mixed = evaluate(v, jnp.concatenate([x, other]))[:4]
    np.testing.assert_allclose(alone, mixed, rtol=1e-5, atol=1e-5)
    # in training, BatchNorm normalizes with the batch's own statistics: the output does depend
    t_alone, _ = train(v, x, jax.random.key(0))
    t_mixed, _ = train(v, jnp.concatenate([x, other]), jax.random.key(0))
    assert not np.allclose(t_alone, t_mixed[:4], atol=1e-3)


@pytest.mark.parametrize("name", ["resnet", "vgg_bn"])
def test_batch_stats_change_only_in_training(name):
    _, _, eval_mutable, train, _, v = compiled(name)
    x = batch_of(4)
    _, in_eval = eval_mutable(v, x)
    for a, b in zip(jax.tree.leaves(in_eval), jax.tree.leaves(v["batch_stats"]), strict=True):
        np.testing.assert_array_equal(a, b)
    _, in_train = train(v, x * 2.0, jax.random.key(0))
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(in_train), jax.tree.leaves(v["batch_stats"]), strict=True)
    ]
    assert all(changed)


def test_dropout_only_in_training_and_keyed_by_the_dropout_stream():
    _, evaluate, _, train, _, v = compiled("vgg_bn")
    x = batch_of(4)
    out = lambda key: train(v, x, key)[0]
    assert not np.allclose(out(jax.random.key(1)), out(jax.random.key(2)))
    np.testing.assert_array_equal(out(jax.random.key(1)), out(jax.random.key(1)))
    np.testing.assert_array_equal(evaluate(v, x), evaluate(v, x))


def test_batchnorm_uses_pytorch_momentum():
    _, _, _, train, v, _ = compiled("vgg_bn")
    x = batch_of(4)
    _, upd = train(v, x, jax.random.key(0))
    # the first BatchNorm sees conv(x) + b: running_mean = 0.9 * 0 + 0.1 * batch mean
    conv = v["params"]["conv_0_0"]
    h = jax.lax.conv_general_dilated(
        x, conv["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    want = 0.1 * (h + conv["bias"]).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(upd["batch_stats"]["bn_0_0"]["mean"], want, rtol=1e-4, atol=1e-6)


def test_shared_train_step_updates_batch_stats_and_eval_step_leaves_them():
    model = tiny("vgg_bn")
    cfg = default_config().optimizer
    x = np.asarray(batch_of(8))
    batch = {"inputs": x, "targets": np.arange(8, dtype=np.int32) % 10}
    state = create_train_state(model, make_optimizer(cfg, 10), x[:1], seed=0)
    before = jax.tree.map(np.asarray, state.model_state)
    train, evaluate = make_steps(objectives.get("cross_entropy"))
    sums = evaluate(state, {**batch, "mask": np.ones(8, np.float32)})
    assert float(sums["count"]) == 8
    for a, b in zip(jax.tree.leaves(state.model_state), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)
    new_state, _ = train(state, batch)
    assert set(new_state.model_state) == {"batch_stats"}
    after = jax.tree.leaves(new_state.model_state)
    assert all(
        not np.array_equal(a, b) for a, b in zip(after, jax.tree.leaves(before), strict=True)
    )
    assert int(new_state.step) == 1
