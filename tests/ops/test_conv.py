"""The fast CPU conv / max-pool path against the stock lax path; pooling and receptive fields."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import rtol_for

from dlkit import ConfigError
from dlkit.ops import avg_pool, conv, conv_output_size, max_pool, receptive_field
from dlkit.ops.conv import (
    adaptive_avg_pool,
    conv2d,
    conv2d_reference,
    max_pool2d,
    max_pool_fast,
    max_pool_reference,
)


def _value_and_grads(fn, *args):
    """f(args) and d/d(args) of sum(sin(f) * r) for a fixed random r: every output gets a weight.
    One jitted program (op-by-op dispatch would compile each of the fast path's ops alone)."""

    def both(*a):
        out = fn(*a)
        r = jax.random.normal(jax.random.key(7), out.shape)
        grads = jax.grad(lambda *b: jnp.sum(jnp.sin(fn(*b)) * r), argnums=tuple(range(len(a))))
        return out, grads(*a)

    return jax.jit(both)(*args)


@pytest.mark.parametrize(
    "shape, kernel, cout, padding, stride",
    [
        ((2, 28, 28, 1), 3, 8, "SAME", 1),  # the cnn's first layer: one channel, shifted sum
        ((2, 12, 10, 1), 5, 6, "VALID", 1),  # one channel, VALID
        ((2, 10, 9, 1), 3, 32, "SAME", 1),  # one channel, > 16 outputs: stacked-taps weight grad
        ((2, 14, 14, 6), 5, 16, "VALID", 1),  # LeNet's conv_1: few channels, col2im input grad
        ((2, 7, 6, 8), (3, 2), 5, ((2, 0), (1, 1)), 1),  # few channels, uneven explicit pads
        ((2, 2, 2, 8), 3, 4, "SAME", 1),  # map smaller than the kernel: im2col matmul
        ((2, 1, 3, 4), (3, 2), 5, "SAME", 1),
        ((2, 14, 14, 32), 3, 16, "SAME", 1),  # long patch: lax weight gradient
        ((3, 9, 7, 3), 5, 4, "VALID", 1),
        ((2, 8, 8, 2), 3, 4, 2, 1),
        ((2, 8, 8, 2), (2, 3), 4, ((1, 0), (2, 1)), 1),
        ((2, 11, 11, 3), 3, 4, "SAME", 2),  # stride 2: falls back to the reference
        ((2, 8, 8, 6), 1, 5, 0, 2),  # 1x1 stride 2 (ResNet shortcut): slice + matmul
        ((2, 7, 9, 6), 1, 5, "SAME", 2),  # odd map: ceil(H / 2) rows, as lax
        ((2, 5, 5, 6), 1, 7, "VALID", 1),  # 1x1 stride 1 (bottleneck): one matmul
        ((2, 5, 5, 6), 1, 7, 1, 1),  # padded 1x1: lax
    ],
)
def test_fast_conv_matches_reference(shape, kernel, cout, padding, stride):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (kh, kw, shape[-1], cout)) * 0.3
    b = jax.random.normal(jax.random.key(2), (cout,))
    fast = _value_and_grads(lambda x, w, b: conv2d(x, w, b, stride, padding, impl="fast"), x, w, b)
    ref = _value_and_grads(lambda x, w, b: conv2d(x, w, b, stride, padding, "reference"), x, w, b)
    for a, r in zip(jax.tree.leaves(fast), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-4)


def test_conv_reference_is_the_written_out_sum():
    x = jax.random.normal(jax.random.key(0), (1, 5, 4, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 3))
    y = conv2d_reference(x, w, 1, "VALID")
    want = np.zeros((1, 3, 2, 3))
    for i in range(3):
        for j in range(2):
            want[0, i, j] = np.einsum("pqc,pqco->o", x[0, i : i + 3, j : j + 3], w)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert y.shape[1] == conv_output_size(5, 3) and y.shape[2] == conv_output_size(4, 3)


@pytest.mark.parametrize("window", [2, 3, (2, 3)])
@pytest.mark.parametrize("hw", [(8, 8), (9, 7)])
def test_fast_max_pool_matches_reference_with_ties(window, hw):
    # integer values: many ties inside windows; the gradient must go to the same (first) element
    x = jnp.round(jax.random.normal(jax.random.key(3), (2, *hw, 3)) * 1.5)
    fast = _value_and_grads(lambda x: max_pool_fast(x, window), x)
    ref = _value_and_grads(lambda x: max_pool_reference(x, window), x)
    for a, r in zip(jax.tree.leaves(fast), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, r)


def test_fast_max_pool_gradient_goes_to_one_element_per_window():
    x = jnp.zeros((1, 4, 4, 1))  # every window is a 4-way tie
    g = jax.grad(lambda x: jnp.sum(max_pool_fast(x, 2)))(x)[0, :, :, 0]
    np.testing.assert_array_equal(g, [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_max_pool_overlapping_and_padded_fall_back_to_reference():
    x = jax.random.normal(jax.random.key(4), (2, 9, 9, 2))
    for kw in [dict(window=3, stride=2), dict(window=2, padding="SAME"), dict(window=3, stride=1)]:
        np.testing.assert_array_equal(max_pool2d(x, **kw), max_pool2d(x, **kw, impl="reference"))


def test_pooling_values_stride_and_padding():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(max_pool(x, 2)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(avg_pool(x, 2)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # overlapping 3x3 windows, stride 1: output (4 - 3) / 1 + 1 = 2
    np.testing.assert_array_equal(max_pool(x, 3, 1)[0, :, :, 0], [[10, 11], [14, 15]])
    # SAME padding with stride 2 on 5x5: ceil(5 / 2) = 3; padding is not counted in averages
    y = jnp.ones((1, 5, 5, 1))
    assert max_pool(y, 2, 2, "SAME").shape == (1, 3, 3, 1)
    np.testing.assert_array_equal(avg_pool(y, 2, 2, "SAME"), jnp.ones((1, 3, 3, 1)))
    assert conv_output_size(5, 2, 2, "SAME") == 3 and conv_output_size(5, 2, 2) == 2


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
def test_two_small_pools_equal_one_large_pool(pool):
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 3))
    two = pool(pool(x, 2), 2)
    one = pool(x, 4)
    tol = rtol_for(np.float32, 16)  # a 4x4 window's mean, summed in another order
    np.testing.assert_allclose(two, one, rtol=tol, atol=tol)
    assert receptive_field([(2, 2), (2, 2)]) == receptive_field([(4, 4)]) == 4


def test_receptive_fields_of_stacks():
    assert receptive_field([(3, 1), (3, 1)]) == 5  # two 3x3 convs see as much as one 5x5
    assert receptive_field([(3, 1)] * 3) == 7
    assert receptive_field([(3, 1), (2, 2), (3, 1), (2, 2)]) == 10  # the cnn's conv/pool stack
    # one output of a 3x3 max pool (stride 1) after a 3x3 conv depends on a 5x5 input patch
    x = jnp.zeros((1, 9, 9, 1))
    w = jnp.ones((3, 3, 1, 1))
    g = jax.grad(lambda x: max_pool(conv2d_reference(x + 1.0, w, 1, "VALID"), 3, 1)[0, 0, 0, 0])
    touched = np.argwhere(np.asarray(g(x))[0, :, :, 0] != 0)
    assert touched.max(axis=0).tolist() <= [4, 4]


def test_adaptive_avg_pool_matches_torch_windows():
    x = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 5, 5, 1))
    y = adaptive_avg_pool(x, (3, 1))
    # rows [0, 2), [1, 4), [3, 5): torch's floor(i*5/3) .. ceil((i+1)*5/3)
    np.testing.assert_allclose(y[0, :, 0, 0], [0.5, 2.0, 3.5])
    z = jax.random.normal(jax.random.key(6), (2, 12, 12, 4))
    tol = rtol_for(np.float32, 4)  # 2x2 windows
    np.testing.assert_allclose(adaptive_avg_pool(z, 6), avg_pool(z, 2), rtol=tol, atol=tol)
    np.testing.assert_allclose(
        adaptive_avg_pool(z[:, :1, :1], 6), jnp.tile(z[:, :1, :1], (1, 6, 6, 1))
    )


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"x has 3 channels but w \(3, 3, 2, 4\)"):
        conv2d(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match=r"NHWC.*\(5, 5\)"):
        max_pool2d(jnp.zeros((5, 5)))
    with pytest.raises(ConfigError, match="choose one of: auto, reference, fast"):
        conv2d(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 3, 3, 4)), impl="turbo")


def test_unpadded_pointwise_conv_is_a_matmul_and_padded_one_is_not():
    x, w = jnp.ones((2, 8, 8, 6)), jnp.ones((1, 1, 6, 5))
    plain = str(jax.make_jaxpr(lambda x, w: conv2d(x, w, None, 2, 0, impl="fast"))(x, w))
    padded = str(jax.make_jaxpr(lambda x, w: conv2d(x, w, None, 1, 1, impl="fast"))(x, w))
    assert "dot_general" in plain and "conv_general_dilated" not in plain
    assert "conv_general_dilated" in padded


def _ops(fn, *args) -> str:
    """The jaxpr of a fresh wrapper of fn (jax caches traces by function, not by platform)."""
    return str(jax.make_jaxpr(lambda *a: fn(*a))(*args))


def test_auto_is_fast_on_cpu_and_reference_elsewhere(monkeypatch):
    """With no registered backend (the oneDNN one: tests/kernels/test_onednn_dispatch.py)."""
    monkeypatch.setattr(conv, "_REGISTERED", {"conv2d": {}, "max_pool2d": {}})
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4))  # one channel: fast = shifted sums
    conv_fn = lambda x, w: conv2d(x, w, None, 1, "SAME")  # noqa: E731 - impl "auto"
    pool_fn = lambda x: max_pool2d(x, 2)  # noqa: E731
    assert conv.platform_of(x) == "cpu" and conv.choose_impl("conv2d", x, w, 1, "SAME") == "fast"
    assert "conv_general_dilated" not in _ops(conv_fn, x, w)
    assert "reduce_window_max" not in _ops(pool_fn, x)
    for platform in ("gpu", "tpu"):
        monkeypatch.setattr(conv, "platform_of", lambda x, p=platform: p)
        assert conv.choose_impl("conv2d", x, w, 1, "SAME") == "reference"
        assert conv.choose_impl("max_pool2d", x, 2, None, "VALID") == "reference"
        assert "conv_general_dilated" in _ops(conv_fn, x, w)
        assert "reduce_window_max" in _ops(pool_fn, x)
        assert "conv_general_dilated" not in _ops(lambda x, w: conv2d(x, w, impl="fast"), x, w)


def test_platform_of_a_traced_array_is_the_default_backend(monkeypatch):
    seen = []
    jax.jit(lambda x: seen.append(conv.platform_of(x)) or x)(jnp.ones(2))
    assert seen == [jax.default_backend()]
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    jax.make_jaxpr(lambda x: seen.append(conv.platform_of(x)) or x)(jnp.ones(2))
    assert seen[-1] == "gpu"


def test_registered_impl_is_auto_on_cpu_where_available(monkeypatch):
    monkeypatch.setattr(conv, "_REGISTERED", {"conv2d": {}, "max_pool2d": {}})
    monkeypatch.setattr(conv, "_FUSED", set())
    calls = []

    def native(x, w, stride, padding):
        calls.append(x.shape)
        return conv2d_reference(x, w, stride, padding)

    conv.register_impl("native", native, available=lambda x, w, s, p: x.shape[-1] == 3)
    x3, w3 = jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    x1, w1 = jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 4))
    assert conv.choose_impl("conv2d", x3, w3, 1, "SAME") == "native"
    assert conv.choose_impl("conv2d", x1, w1, 1, "SAME") == "fast"
    np.testing.assert_array_equal(conv2d(x3, w3), conv2d(x3, w3, impl="reference"))
    assert calls == [(1, 5, 5, 3)]
    conv2d(x1, w1, impl="native")  # by name, whatever `available` says
    assert calls[-1] == (1, 5, 5, 1)
    assert conv.choose_impl("conv2d", x3, w3, 1, "SAME", platform="gpu") == "reference"
    with pytest.raises(ValueError, match="built-in"):
        conv.register_impl("fast", native)
    with pytest.raises(ConfigError, match="choose one of: auto, reference, fast, native"):
        conv2d(x3, w3, impl="onednn")


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_relu_is_relu_of_conv_plus_bias_with_no_gradient_at_zero(impl):
    """conv2d(..., relu=True) = max(conv + b, 0); where conv + b is exactly 0 (a zero patch and a
    zero bias) the gradient is 0, as in a fused kernel and PyTorch (jnp.maximum would give half)."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 3)), jnp.float32)
    x = x.at[:, :3, :3].set(0.0)  # zero patches: conv + b == 0 there
    w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 3, 4)), jnp.float32)
    b = jnp.zeros((4,), jnp.float32)
    y = conv2d(x, w, b, 1, "VALID", impl, relu=True)
    np.testing.assert_allclose(y, jnp.maximum(conv2d_reference(x, w, 1, "VALID") + b, 0), atol=1e-5)
    db = jax.grad(lambda b: conv2d(x, w, b, 1, "VALID", impl, relu=True).sum())(b)
    want = (conv2d_reference(x, w, 1, "VALID") > 0).sum((0, 1, 2)).astype(jnp.float32)
    np.testing.assert_array_equal(db, want)


def test_a_fused_impl_gets_the_bias_and_relu(monkeypatch):
    monkeypatch.setattr(conv, "_REGISTERED", {"conv2d": {}, "max_pool2d": {}})
    monkeypatch.setattr(conv, "_FUSED", set())
    calls = []

    def fused(x, w, stride, padding, b, relu):
        calls.append((b is not None, relu))
        y = conv2d_reference(x, w, stride, padding) + (0 if b is None else b)
        return jnp.maximum(y, 0) if relu else y

    conv.register_impl("fused", fused, fused=True)
    x, w, b = jnp.ones((1, 5, 5, 3)), -jnp.ones((3, 3, 3, 4)), jnp.arange(4.0)
    np.testing.assert_array_equal(
        conv2d(x, w, b, relu=True, impl="fused"), conv2d(x, w, b, relu=True, impl="reference")
    )
    assert calls == [(True, True)]
