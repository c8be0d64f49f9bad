"""Backprop by hand equals jax.grad: the notes' worked example and random MLPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlkit import ConfigError
from dlkit.nn import MLP
from dlkit.ops import backprop, cross_entropy


def test_notes_example_dlogits_then_dw_db():
    # The notes: p = softmax(z) = [0.6, 0.4], y = [1, 0] -> dL/dz = p - y = [-0.4, 0.4].
    z = jnp.log(jnp.array([[0.6, 0.4]]))
    dz = backprop.softmax_cross_entropy_backward(z, jnp.array([0]))
    np.testing.assert_allclose(dz, [[-0.4, 0.4]], atol=1e-6)
    np.testing.assert_allclose(
        backprop.softmax_cross_entropy_backward(z, jnp.array([[1.0, 0.0]])), dz, atol=1e-7
    )

    # Down one linear layer z = a W + b with a = [1, 2]: dW = a^T dz, db = dz, da = dz W^T.
    a = jnp.array([[1.0, 2.0]])
    w = jnp.array([[0.5, -1.0], [2.0, 0.25]])
    da, dw, db = backprop.linear_backward(a, w, dz)
    np.testing.assert_allclose(dw, [[-0.4, 0.4], [-0.8, 0.8]], atol=1e-6)
    np.testing.assert_allclose(db, [-0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(da, [[-0.4 * 0.5 + 0.4 * -1.0, -0.4 * 2.0 + 0.4 * 0.25]], atol=1e-6)


def test_notes_example_through_a_relu_layer_matches_jax_grad():
    # x -> hidden (ReLU) -> head; the head's bias is chosen so that p = [0.6, 0.4] exactly.
    x = jnp.array([[1.0, -2.0]])
    w1 = jnp.array([[1.0, 0.5], [0.5, 1.0]])  # z1 = [0, -1.5] + b1
    b1 = jnp.array([1.0, 0.0])  # z1 = [1.0, -1.5] -> h = [1, 0]: unit 2 is off
    w2 = jnp.zeros((2, 2))
    b2 = jnp.log(jnp.array([0.6, 0.4]))
    params = {"hidden_0": {"kernel": w1, "bias": b1}, "head": {"kernel": w2, "bias": b2}}
    loss, g = backprop.mlp_value_and_grad(params, x, jnp.array([0]), "relu")
    np.testing.assert_allclose(loss, -np.log(0.6), rtol=1e-6)
    np.testing.assert_allclose(g["head"]["bias"], [-0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(g["head"]["kernel"], [[-0.4, 0.4], [0.0, 0.0]], atol=1e-6)
    # dh = dz W2^T = 0 since W2 = 0: nothing reaches the first layer.
    np.testing.assert_allclose(g["hidden_0"]["kernel"], np.zeros((2, 2)), atol=1e-7)

    # With W2 != 0: dh = dz W2^T, dz1 = dh * [z1 > 0], dW1 = x^T dz1, db1 = dz1.
    w2 = jnp.array([[1.0, 3.0], [2.0, -1.0]])
    params["head"] = {"kernel": w2, "bias": b2 - jnp.array([1.0, 3.0])}  # keeps z = log p
    loss, g = backprop.mlp_value_and_grad(params, x, jnp.array([0]), "relu")
    dh = np.array([-0.4 * 1.0 + 0.4 * 3.0, -0.4 * 2.0 + 0.4 * -1.0])  # [0.8, -1.2]
    dz1 = dh * np.array([1.0, 0.0])
    np.testing.assert_allclose(g["hidden_0"]["bias"], dz1, atol=1e-6)
    np.testing.assert_allclose(g["hidden_0"]["kernel"], np.outer([1.0, -2.0], dz1), atol=1e-6)
    ref = jax.grad(lambda p: cross_entropy(backprop.mlp_forward(p, x, "relu")[0], jnp.array([0])))
    for got, want in zip(jax.tree.leaves(g), jax.tree.leaves(ref(params)), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("hidden", [(), (7,), (16, 8, 5)])
def test_random_mlp_equals_jax_grad(activation, hidden):
    key = jax.random.PRNGKey(len(hidden) * 10 + len(activation))
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (6, 3, 4, 1))  # flattened to (6, 12) as MLP does
    y = jax.random.randint(ky, (6,), 0, 5)
    model = MLP(num_classes=5, hidden_sizes=hidden, activation=activation)
    params = model.init(kp, x)["params"]

    def loss_fn(p):
        return cross_entropy(model.apply({"params": p}, x), y)

    loss, want = jax.value_and_grad(loss_fn)(params)
    got_loss, got = backprop.mlp_value_and_grad(params, x, y, activation)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        backprop.mlp_forward(params, x, activation)[0],
        model.apply({"params": params}, x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_soft_targets_and_jit():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    y = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (4, 3)))
    model = MLP(num_classes=3, hidden_sizes=(6,), activation="tanh")
    params = model.init(jax.random.PRNGKey(2), x)["params"]
    want = jax.grad(lambda p: cross_entropy(model.apply({"params": p}, x), y))(params)
    got = jax.jit(lambda p: backprop.mlp_value_and_grad(p, x, y, "tanh")[1])(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise():
    params = {"hidden_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    with pytest.raises(ValueError, match="hidden_0..hidden_n"):
        backprop.mlp_forward(params, jnp.ones((1, 3)))
    params["head"] = {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"kernel \(3, 2\) does not take input \(1, 4\)"):
        backprop.mlp_forward(params, jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="labels"):
        backprop.softmax_cross_entropy_backward(jnp.ones((2, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="unknown activation"):
        backprop.activation_grad("swish", jnp.ones(2), jnp.ones(2))
    with pytest.raises(ConfigError, match="unknown activation with a hand-written derivative"):
        backprop.activation_grad("gelu", jnp.ones(2), jnp.ones(2))
