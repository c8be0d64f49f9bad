"""The worked examples of the notes, reproduced with dlkit.ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import rtol_for

from dlkit import ops


def test_softmax_worked_example():
    p = ops.softmax(jnp.array([3.5, 1.2, 0.8]))
    np.testing.assert_allclose(p, [0.856, 0.086, 0.058], atol=1e-3)  # the notes truncate
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)


def test_softmax_is_stable_for_huge_logits():
    p = ops.softmax(jnp.array([1e4, 1e4 - 1.0, -1e4]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(
        p[:2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))], rtol=1e-5
    )
    np.testing.assert_allclose(ops.log_softmax(jnp.array([1e4, 0.0]))[1], -1e4, rtol=1e-6)


@pytest.mark.parametrize("p, expected", [([0.856, 0.086, 0.058], 0.155), ([0.1, 0.6, 0.3], 2.303)])
def test_cross_entropy_worked_examples(p, expected):
    y = jnp.array([[1.0, 0.0, 0.0]])
    assert float(ops.cross_entropy_from_probs(jnp.array([p]), y)) == pytest.approx(
        expected, abs=5e-4
    )
    # The same figure through logits: log p are logits whose softmax is p.
    assert float(ops.cross_entropy(jnp.log(jnp.array([p])), jnp.array([0]))) == pytest.approx(
        expected, abs=5e-4
    )


def test_cross_entropy_integer_and_probability_targets_agree():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    labels = jnp.array([0, 3, 1, 2, 3])
    a = ops.cross_entropy(logits, labels)
    b = ops.cross_entropy(logits, jax.nn.one_hot(labels, 4))
    np.testing.assert_allclose(a, b, rtol=rtol_for(np.float32, 5 * 4))  # mean of 5 sums of 4


def test_cross_entropy_mask_averages_real_rows_only():
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    labels = jnp.array([0, 1, 2, 0])
    masked = ops.cross_entropy(logits, labels, mask=jnp.array([1, 1, 0, 0]))
    want = ops.cross_entropy(logits[:2], labels[:2])
    np.testing.assert_allclose(masked, want, rtol=rtol_for(np.float32, 4 * 3))


def test_relu_and_sigmoid_worked_examples():
    x = jnp.array([-0.5, 1.2, 0.3])
    np.testing.assert_allclose(ops.relu(x), [0.0, 1.2, 0.3])
    np.testing.assert_allclose(np.round(ops.sigmoid(x), 3), [0.378, 0.769, 0.574])


def test_softmax_cross_entropy_gradient_is_p_minus_y():
    p = jnp.array([0.6, 0.4])
    z = jnp.log(p)  # logits whose softmax is p
    grad = jax.grad(lambda z: ops.cross_entropy(z[None], jnp.array([0])))(z)
    np.testing.assert_allclose(grad, [-0.4, 0.4], atol=1e-6)
    z2 = jax.random.normal(jax.random.PRNGKey(2), (7,))
    y = jax.nn.one_hot(3, 7)
    np.testing.assert_allclose(
        jax.grad(lambda z: ops.cross_entropy(z[None], y[None]))(z2), ops.softmax(z2) - y, atol=1e-6
    )


def test_pooling_and_conv_sizes():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    pooled = ops.max_pool(x, 2, 2)
    assert pooled.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(pooled[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(ops.avg_pool(x, 2)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert ops.conv_output_size(32, 3) == 30
    assert ops.conv_output_size(32, 3, padding="SAME") == 32
    assert ops.conv_output_size(227, 11, stride=4) == 55
    assert ops.pool_output_size(4, 2, 2) == 2


def test_avg_pool_same_padding_ignores_padding():
    x = jnp.ones((1, 3, 3, 1))
    np.testing.assert_allclose(ops.avg_pool(x, 2, 2, padding="SAME"), np.ones((1, 2, 2, 1)))


def test_receptive_field():
    assert ops.receptive_field([(3, 1), (3, 1)]) == 5  # two 3x3 convs see 5x5
    assert ops.receptive_field([(3, 1), (2, 2), (3, 1), (2, 2)]) == 10
    assert ops.receptive_field([(2, 2), (2, 2)]) == ops.receptive_field([(4, 4)])


def test_linear_shapes_and_error():
    x, w, b = jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.arange(4.0)
    np.testing.assert_allclose(ops.linear(x, w, b), np.tile(3 + np.arange(4.0), (2, 1)))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        ops.linear(jnp.ones((2, 5)), w, b)


def test_accuracy():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert float(ops.accuracy(logits, jnp.array([0, 1, 1]))) == pytest.approx(2 / 3)
