"""The notes' CNN and LeNet-5: shapes, parameter counts, fast path == stock path, summary tables."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import atol_for, rtol_for

import dlkit
from dlkit import ConfigError, models
from dlkit.nn.cnn import CNN, Conv2D


def n_params(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def test_cnn_shapes_and_parameter_count():
    model = models.get("cnn", num_classes=10)
    x = jnp.zeros((2, 28, 28, 1))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    # conv 3*3*1*32+32, conv 3*3*32*64+64, dense 7*7*64*256+256, dense 256*10+10
    assert n_params(v["params"]) == 320 + 18_496 + 803_072 + 2_570 == 824_458
    assert jax.eval_shape(model.apply, v, x).shape == (2, 10)
    assert set(v) == {"params"}


def test_lenet5_parameter_count():
    model = models.get("lenet5", num_classes=10)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1))))
    # 5*5*1*6+6, 5*5*6*16+16, 400*120+120, 120*84+84, 84*10+10
    assert n_params(v["params"]) == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706


def test_fast_path_matches_stock_path_outputs_and_gradients():
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    y = jnp.arange(4) % 10
    fast, ref = CNN(impl="fast"), CNN(impl="reference")
    params = fast.init(jax.random.key(0), x)["params"]

    def loss(model):
        def f(p):
            logits = model.apply({"params": p}, x)
            return dlkit.ops.cross_entropy(logits, y), logits

        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (l_fast, out_fast), g_fast = loss(fast)
    (l_ref, out_ref), g_ref = loss(ref)
    np.testing.assert_allclose(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_fast, l_ref, rtol=1e-5)  # as the logits it averages
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_reference_conv2d_is_flax_conv():
    x = jax.random.normal(jax.random.key(2), (2, 9, 9, 3))
    ours = Conv2D(5, (3, 3), (2, 2), "SAME", impl="reference")
    stock = nn.Conv(5, (3, 3), (2, 2), "SAME")
    v = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, stock.init(jax.random.key(0), x))
    n = 3 * 3 * 3  # each output sums kh kw Ci products
    np.testing.assert_allclose(
        ours.apply(v, x),
        stock.apply(v, x),
        rtol=rtol_for(np.float32, n),
        atol=atol_for(np.float32, n),
    )


def test_summary_of_the_notes_example():
    # 32x32x3 input, 32 filters 3x3 valid, ReLU, 2x2 max pool, dense 10
    model = CNN(num_classes=10, features=(32,), padding="VALID", hidden=())
    s = dlkit.nn.summary(model, (32, 32, 3))
    rows = [(r.name, r.output_shape, r.params, r.receptive_field) for r in s.rows]
    assert rows == [
        ("conv_0", (30, 30, 32), 3 * 3 * 3 * 32 + 32, 3),
        ("pool_0", (15, 15, 32), 0, 4),
        ("head", (10,), 15 * 15 * 32 * 10 + 10, None),
    ]
    table = str(s)
    assert "30x30x32" in table and "15x15x32" in table and "72,906" in table
    assert table.index("30x30x32") < table.index("15x15x32")


def test_summary_receptive_fields_of_the_cnn():
    s = dlkit.nn.summary(models.get("cnn", num_classes=10), (28, 28, 1))
    rf = {r.name: r.receptive_field for r in s.rows}
    assert rf == {
        "conv_0": 3,
        "pool_0": 4,
        "conv_1": 8,
        "pool_1": 10,
        "dense_0": None,
        "head": None,
    }
    assert s.total_params == 824_458


def test_parameter_sharing_report():
    row = dlkit.nn.conv_vs_dense((32, 32, 3), features=64, kernel_size=3)
    assert row.conv_weights == 3 * 3 * 3 * 64 == 1_728
    assert row.dense_weights == 32 * 32 * 3 * 64 == 196_608
    assert row.dense_map_weights == (32 * 32 * 3) * (32 * 32 * 64)
    assert "1,728" in str(row) and "196,608" in str(row)
    model = CNN(num_classes=10, features=(64, 8), hidden=())
    report = dlkit.nn.parameter_sharing(model, (32, 32, 3))
    assert [r.name for r in report] == ["conv_0", "conv_1"]
    assert report[0] == dataclasses.replace(row, name="conv_0")
    assert report[1].conv_weights == 3 * 3 * 64 * 8 and report[1].input_shape == (16, 16, 64)


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="one per conv layer"):
        CNN(padding=("SAME",)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ConfigError, match="choose one of: max, avg"):
        CNN(pool="median").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"images \(B, H, W, C\), got \(8, 8\)"):
        CNN().init(jax.random.key(0), jnp.zeros((8, 8)))


def test_summary_of_alexnet_and_resnet18_receptive_fields():
    s = dlkit.nn.summary(models.get("alexnet", num_classes=1000), (224, 224, 3))
    rf = {r.name: r.receptive_field for r in s.rows}
    assert (rf["conv_0"], rf["pool_0"], rf["pool_4"]) == (11, 19, 195)  # the published values
    assert rf["Dropout_1"] is None and rf["head"] is None  # after a dense layer: everything
    assert s.total_params == 61_100_840
    rows = dlkit.nn.summary(models.get("resnet18", num_classes=10), (224, 224, 3)).rows
    last_conv = [r for r in rows if r.kind == "Conv2D"][-1]
    assert (last_conv.name, last_conv.receptive_field) == ("stage_3_block_1/conv_1", 435)
    # the 1x1 projection shortcut (stride 2) sees what its block's input sees: no double stride
    short = next(r for r in rows if r.name == "stage_1_block_0/conv_short")
    assert short.receptive_field == 43


@pytest.mark.parametrize(
    "name, kwargs, size",
    [
        ("cnn", {}, 28),
        ("lenet5", {}, 28),
        ("alexnet", dict(features=(8, 8, 8, 8, 8), hidden=16), 64),
        ("vgg11", {}, 32),
        ("resnet18", {}, 32),
    ],
)
def test_vision_models_pick_conv_impl_by_platform(monkeypatch, name, kwargs, size):
    """impl "auto" by default: the fast CPU path (custom VJPs) on CPU, plain lax elsewhere."""
    from dlkit.ops import conv

    model = models.get(name, num_classes=10, **kwargs)
    assert model.impl == "auto"
    x = jnp.ones((1, size, size, 1 if name in ("cnn", "lenet5") else 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)

    def step_jaxpr():
        return str(jax.make_jaxpr(lambda p, x: model.apply(p, x))(params, x))

    assert "custom_vjp" in step_jaxpr()
    monkeypatch.setattr(conv, "platform_of", lambda x: "gpu")
    assert "custom_vjp" not in step_jaxpr()
