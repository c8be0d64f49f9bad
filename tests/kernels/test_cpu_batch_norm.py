"""dlkit.ops.batch_norm's impl "onednn" (the native CPU kernel, dlkit.kernels.cpu.norm) against its
reference (flax's math): outputs, statistics and every gradient, with ReLU and a residual; the
statistics' own cotangents; vmap; bitwise reruns; which calls "auto" takes; dlkit.nn.BatchNorm
against flax's; ResNet through it. The sharded case (2 devices) runs in test_onednn_conv.py's
subprocess."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_trees_close

import dlkit  # noqa: F401  (registers the native impl)
from dlkit import ConfigError
from dlkit.kernels import cpu
from dlkit.kernels.cpu import norm
from dlkit.nn.norm import BatchNorm
from dlkit.nn.resnet import ResNet
from dlkit.ops.batch_norm import batch_norm, choose_impl

needs_kernel = pytest.mark.skipif(
    not cpu.available(), reason=f"native CPU kernels unavailable: {cpu.why_unavailable()}"
)


def bn_args(shape, seed=0, offset=0.5):
    """Random (x, scale, bias, residual); x away from 0 so the shifted sums matter."""
    rng = np.random.default_rng(seed)
    r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)  # noqa: E731
    c = shape[-1]
    return r(*shape) * 2 + offset, r(c), r(c), r(*shape)


def loss(impl, relu, residual):
    """A scalar of y, the mean and the variance (so their cotangents are not zero)."""

    def f(x, scale, bias, res):
        y, mean, var = batch_norm(x, scale, bias, 1e-5, relu, res if residual else None, impl=impl)
        return jnp.sum(y * jnp.cos(y)) + jnp.sum(mean**2) + jnp.sum(jnp.sin(var))

    return f


def train_loss(impl, relu):
    """As in a train step: the statistics only leave as an aux (zero cotangents)."""

    def f(x, scale, bias):
        y, mean, var = batch_norm(x, scale, bias, 1e-5, relu, impl=impl)
        return jnp.sum(y * jnp.cos(y)), (mean, var)

    return f


@needs_kernel
@pytest.mark.parametrize("shape", [(4, 6, 5, 16), (3, 1, 1, 7), (64, 33), (2, 3, 4, 5, 40)])
@pytest.mark.parametrize("relu, residual", [(False, False), (True, False), (True, True)])
def test_matches_the_reference(shape, relu, residual):
    args = bn_args(shape)
    m = int(np.prod(shape[:-1]))
    outs = [
        jax.jit(lambda *a, i=i: batch_norm(*a[:3], 1e-5, relu, a[3] if residual else None, impl=i))(
            *args
        )
        for i in ("onednn", "reference")
    ]
    assert_trees_close(outs[0], outs[1], m)
    argnums = (0, 1, 2, 3) if residual else (0, 1, 2)
    grads = [
        jax.jit(jax.value_and_grad(loss(i, relu, residual), argnums=argnums))(*args)
        for i in ("onednn", "reference")
    ]
    assert_trees_close(grads[0], grads[1], 4 * m)  # scale and bias gradients sum over M rows


@needs_kernel
@pytest.mark.parametrize("relu", [False, True])
def test_train_step_gradients_match(relu):
    args = bn_args((8, 4, 4, 24), seed=1)[:3]
    got, want = (
        jax.jit(jax.grad(train_loss(i, relu), argnums=(0, 1, 2), has_aux=True))(*args)
        for i in ("onednn", "reference")
    )
    assert_trees_close(got, want, 4 * 128)


@needs_kernel
def test_statistics_of_data_far_from_zero():
    """Shifted sums: the variance of x ~ 1000 + N(0, 1) keeps its digits (E[x^2] - E[x]^2 in
    float32 would lose them)."""
    x = bn_args((32, 8, 8, 16), seed=2, offset=0.0)[0] / 2 + 1000.0
    c = jnp.ones(16)
    _, mean, var = batch_norm(x, c, c * 0, impl="onednn")
    xd = np.asarray(x, np.float64).reshape(-1, 16)
    np.testing.assert_allclose(mean, xd.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, xd.var(0), rtol=1e-4)


@needs_kernel
def test_per_example_calls_under_vmap():
    x, s, b, _ = bn_args((3, 4, 5, 5, 8), seed=3)
    f = lambda i: jax.jit(jax.vmap(jax.grad(lambda x: loss(i, True, False)(x, s, b, None))))  # noqa: E731
    assert_trees_close(f("onednn")(x), f("reference")(x), 4 * 100)


@needs_kernel
def test_reruns_are_bitwise_equal():
    args = bn_args((16, 8, 8, 32), seed=4)
    run = jax.jit(jax.value_and_grad(loss("onednn", True, True), argnums=(0, 1, 2, 3)))
    first = run(*args)
    for _ in range(3):
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(run(*args)), strict=True):
            np.testing.assert_array_equal(a, b)


@needs_kernel
def test_thread_counts_give_close_results():
    x, s, b, r = bn_args((16, 6, 6, 8), seed=5)
    one, two = (
        jax.jit(lambda *a, t=t: norm.batch_norm(*a, 1e-5, True, r, threads=t))(x, s, b)
        for t in (1, 3)
    )
    assert_trees_close(one, two, 16 * 36)


@needs_kernel
def test_auto_takes_the_kernel_for_float32_on_cpu_only():
    x, s, b, _ = bn_args((2, 3, 3, 4))
    assert choose_impl(x, s, b) == "onednn"
    assert choose_impl(x, s, b, platform="gpu") == "reference"
    assert choose_impl(x.astype(jnp.bfloat16), s, b) == "reference"
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, s, b)]
    assert choose_impl(*shapes) == "reference"  # shapes, not arrays


def test_bad_input_is_one_line():
    x, s, b, r = bn_args((2, 3, 3, 4))
    with pytest.raises(ConfigError, match="unknown batch_norm implementation 'onedn' \\(did"):
        batch_norm(x, s, b, impl="onedn")
    with pytest.raises(ValueError, match=r"scale, bias \(C,\); got x \(2, 3, 3, 4\), scale \(3,\)"):
        batch_norm(x, s[:3], b)
    with pytest.raises(ValueError, match="residual \\(2, 3, 3, 3\\) must have x's shape"):
        batch_norm(x, s, b, residual=r[..., :3])


def _flax_and_dlkit(relu, **fields):
    mine = BatchNorm(momentum=0.9, epsilon=1e-5, relu=relu, **fields)
    theirs = nn.BatchNorm(momentum=0.9, epsilon=1e-5, **fields)
    return mine, theirs


@needs_kernel
@pytest.mark.parametrize("relu", [False, True])
def test_module_equals_flax_batchnorm(relu):
    """Same variables, outputs, gradients and running averages as flax's BatchNorm (+ ReLU)."""
    x = bn_args((8, 5, 5, 12), seed=6)[0]
    mine, theirs = _flax_and_dlkit(relu)
    v = theirs.init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.structure(mine.init(jax.random.key(0), x, use_running_average=False)) == (
        jax.tree.structure(v)
    )
    v = {"params": {"scale": v["params"]["scale"] * 1.5, "bias": v["params"]["bias"] + 0.2},
         "batch_stats": v["batch_stats"]}  # fmt: skip
    act = nn.relu if relu else (lambda y: y)

    def run(apply):
        def f(p):
            y, upd = apply(
                {**v, "params": p}, x, use_running_average=False, mutable=["batch_stats"]
            )
            return jnp.sum(jnp.sin(y)), (y, upd)

        return jax.jit(jax.value_and_grad(f, has_aux=True))(v["params"])

    got = run(mine.apply)
    want = run(lambda *a, **k: (lambda y, u: (act(y), u))(*theirs.apply(*a, **k)))
    assert_trees_close(got, want, 4 * 200)
    eval_mine = mine.apply(v, x, use_running_average=True)
    eval_theirs = act(theirs.apply(v, x, use_running_average=True))
    np.testing.assert_array_equal(eval_mine, eval_theirs)  # inference: flax's own code


@needs_kernel
def test_resnet_auto_matches_reference():
    """A small CIFAR-stem ResNet in train mode: loss, gradients and new statistics."""
    x = bn_args((8, 16, 16, 3), seed=7)[0]
    make = lambda impl: ResNet(  # noqa: E731
        num_classes=10, stage_sizes=(1, 1), width=8, cifar_stem=True, impl=impl, norm_impl=impl
    )
    v = make("reference").init(jax.random.key(1), x)

    def run(impl):
        def f(p):
            y, upd = make(impl).apply(
                {"params": p, "batch_stats": v["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.mean(y**2), upd

        return jax.jit(jax.value_and_grad(f, has_aux=True))(v["params"])

    assert_trees_close(run("auto"), run("reference"), 8 * 16 * 16 * 9 * 8)
    jaxpr = str(jax.make_jaxpr(lambda p: make("auto").apply(p, x, train=True, mutable=True))(v))
    assert jaxpr.count("dlkit_cpu_bn_fwd") == 6  # stem, 2 per block, the shortcut's


def case_sharded():
    """(In test_onednn_conv.py's 2-device subprocess.) Under a mesh that splits the batch "auto"
    takes the reference (statistics over the whole batch), equal to the unsplit kernel's."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    x, s, b, r = bn_args((8, 4, 4, 6), seed=8)
    run = jax.jit(jax.value_and_grad(loss("auto", True, True), argnums=(0, 1, 2, 3)))
    want = run(x, s, b, r)
    split = NamedSharding(mesh, PartitionSpec("data"))
    xs, rs = jax.device_put(x, split), jax.device_put(r, split)
    with jax.set_mesh(mesh):
        got = run(xs, s, b, rs)
        text = run.lower(xs, s, b, rs).as_text()
    assert "dlkit_cpu_bn" not in text
    assert_trees_close(got, want, 4 * 128)
    print("batch norm sharded ok")
