"""dlkit.ops.lstm_stack's impl "onednn" (oneDNN's LSTM, dlkit.kernels.cpu.lstm) against its
reference, the wavefront scan: outputs, final carries and every gradient; per-example gradients
under vmap; bitwise reruns; which calls "auto" gives oneDNN; the char LM through it. The sharded
case (2 devices) runs in test_onednn_conv.py's shard_map subprocess."""

import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_trees_close

import dlkit  # noqa: F401  (registers the oneDNN impl)
from dlkit import ConfigError, models
from dlkit.kernels import cpu
from dlkit.kernels.cpu import lstm
from dlkit.ops.lstm_stack import choose_impl, lstm_stack

needs_kernel = pytest.mark.skipif(
    not cpu.available(), reason=f"oneDNN kernels unavailable: {cpu.why_unavailable()}"
)


def stack_args(steps, batch, features, hidden, layers, seed=0, dtype=jnp.float32):
    """Random (xs, carries, weights, biases) for ops.lstm_stack, carries non-zero."""
    rng = np.random.default_rng(seed)
    r = lambda *s, scale=1.0: jnp.asarray(rng.standard_normal(s) * scale, dtype)  # noqa: E731
    dims = [features] + [hidden] * (layers - 1)
    xs = r(steps, batch, features)
    carries = tuple((r(batch, hidden), r(batch, hidden)) for _ in dims)
    weights = tuple(r(d + hidden, 4 * hidden, scale=(d + hidden) ** -0.5) for d in dims)
    biases = tuple(r(4 * hidden, scale=0.1) for _ in dims)
    return xs, carries, weights, biases


def loss(impl):
    """A scalar of every output (top hs and both parts of each final carry)."""

    def f(xs, carries, weights, biases):
        finals, hs = lstm_stack(xs, carries, weights, biases, impl=impl)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(c) + h * h) for c, h in finals)

    return f


@functools.partial(jax.jit, static_argnames="impl")
def value_and_grads(args, impl):
    return jax.value_and_grad(lambda a: loss(impl)(*a))(args)


@needs_kernel
@pytest.mark.parametrize(
    "steps, batch, features, hidden, layers",
    [(1, 1, 3, 2, 1), (9, 4, 5, 8, 2), (6, 3, 16, 16, 3)],  # T=1; D != H; D == H, 3 layers
)
def test_matches_the_wavefront_scan(steps, batch, features, hidden, layers):
    args = stack_args(steps, batch, features, hidden, layers)
    outs = [
        jax.jit(lambda a, i=impl: lstm_stack(*a, impl=i))(args) for impl in ("onednn", "wavefront")
    ]
    n = steps * layers * (features + hidden)  # the longest chain feeding an output
    assert_trees_close(outs[0], outs[1], n)
    got, want = value_and_grads(args, "onednn"), value_and_grads(args, "wavefront")
    assert_trees_close(got, want, n * batch * steps)  # weight gradients sum over B and T


@needs_kernel
def test_per_example_gradients_under_vmap():
    xs, carries, weights, biases = stack_args(5, 4, 3, 4, 2, seed=1)
    one = lambda c: tuple((a[:1], b[:1]) for a, b in c)  # noqa: E731

    def per_example(impl):
        g = jax.grad(lambda w, x: loss(impl)(x[:, None], one(carries), w, biases))
        return jax.jit(jax.vmap(g, in_axes=(None, 1)))(weights, xs)

    assert_trees_close(per_example("onednn"), per_example("wavefront"), 5 * 2 * 7)


@needs_kernel
def test_reruns_are_bitwise_equal():
    args = stack_args(16, 8, 12, 32, 2, seed=2)
    first = value_and_grads(args, "onednn")
    for _ in range(3):
        again = value_and_grads(args, "onednn")
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(a, b)


@needs_kernel
def test_auto_takes_onednn_for_float32_on_cpu_only():
    args = stack_args(3, 2, 3, 4, 2)
    assert choose_impl(*args) == "onednn"
    assert choose_impl(*args, platform="gpu") == "wavefront"
    assert choose_impl(*stack_args(3, 2, 3, 4, 2, dtype=jnp.bfloat16)) == "wavefront"
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    assert choose_impl(*shapes) == "wavefront"  # shapes, not arrays


def test_unknown_impl_is_one_line():
    with pytest.raises(ConfigError, match="unknown lstm_stack implementation 'onednnn' \\(did"):
        lstm_stack(*stack_args(2, 1, 2, 2, 1), impl="onednnn")


@needs_kernel
def test_char_lstm_auto_matches_wavefront():
    """The char LM (embedding, 2 LSTM layers 8 -> 16, head): impl auto (oneDNN) vs wavefront."""
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 11, (4, 12)), jnp.int32)
    make = lambda impl: models.get(  # noqa: E731
        "char_lstm", num_classes=11, hidden_size=16, num_layers=2, embed_dim=8, impl=impl
    )
    params = make("wavefront").init(jax.random.key(0), tokens)

    def grads(impl):
        f = lambda p: jnp.mean(make(impl).apply(p, tokens) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(f))(params)

    assert_trees_close(grads("auto"), grads("wavefront"), 12 * 2 * 24 * 4)
    jaxpr = str(jax.make_jaxpr(lambda p: make("auto").apply(p, tokens))(params))
    assert jaxpr.count("dlkit_onednn_lstm_fwd") == 2  # one call per layer


@needs_kernel
def test_thread_counts_give_close_results():
    args = stack_args(8, 6, 4, 8, 1, seed=4)
    one, two = (jax.jit(lambda a, t=t: lstm.lstm_stack(*a, threads=t))(args) for t in (1, 2))
    assert_trees_close(one, two, 8 * 12)


@needs_kernel
@pytest.mark.parametrize("batch, threads", [(5, 2), (4, 3), (1, 2)])  # uneven; 3 chunks; 1 row
def test_a_split_batch_matches_one_team_and_the_scan(batch, threads):
    """Chunks of rows per thread (weight gradients summed over chunks) vs one oneDNN team."""
    args = stack_args(7, batch, 5, 8, 2, seed=6)

    @functools.partial(jax.jit, static_argnames="split")
    def run(a, split):
        def f(a):
            if split is None:  # the reference
                return jnp.sum(jnp.sin(lstm_stack(*a, impl="wavefront")[1]))
            return jnp.sum(jnp.sin(lstm.lstm_stack(*a, threads=threads, split=split)[1]))

        return jax.value_and_grad(f)(a)

    split = run(args, True)
    assert_trees_close(split, run(args, False), 7 * 2 * 13 * batch)
    assert_trees_close(split, run(args, None), 7 * 2 * 13 * batch)


def test_the_split_rule_keeps_big_hidden_sizes_on_one_team():
    assert lstm.splits(32, 256, 2) and not lstm.splits(32, 512, 2)
    assert not lstm.splits(32, 256, 1) and not lstm.splits(1, 256, 2)


HUGE_PAGES_CASE = """
import pathlib
import jax, jax.numpy as jnp
from dlkit.kernels.cpu import lstm

def advised(a):  # is the mapping holding a's first whole 2 MiB page advised (VmFlags 'hg')?
    page = (a.unsafe_buffer_pointer() + (2 << 20) - 1) & ~((2 << 20) - 1)
    inside = False
    for line in pathlib.Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= page < hi
        elif inside and head == "VmFlags:":
            return "hg" in line.split()[1:]

z, f = jnp.zeros((32, 256)), jnp.ones  # char_lstm's first layer: a 79 MiB workspace
out = jax.jit(lstm._forward, static_argnums=(6, 7))(
    f((128, 32, 64)), z, z, f((64, 1024)), f((256, 1024)), f(1024), 2, True)
print("workspace advised", advised(out[3]), "output advised", advised(out[0]))
"""


@needs_kernel
@pytest.mark.skipif(
    not pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="no transparent huge pages in this kernel",
)
def test_a_fresh_workspace_is_advised_to_take_huge_pages():
    """Without the door, XLA mmaps the 79 MiB workspace afresh each call: the forward asks for
    transparent huge pages on it (2 MiB faults, not 4 KiB ones), and on nothing else it writes."""
    root = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", HUGE_PAGES_CASE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["workspace", "advised", "True", "output", "advised", "False"]


def case_sharded():
    """(In test_onednn_conv.py's 2-device subprocess.) Under jax.set_mesh over the batch, the
    oneDNN LSTM runs per device on half the batch; values and gradients equal the scan's."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    xs, carries, weights, biases = stack_args(6, 8, 5, 8, 2, seed=5)
    xs = jax.device_put(xs, NamedSharding(mesh, PartitionSpec(None, "data")))
    args = (xs, carries, weights, biases)
    with jax.set_mesh(mesh):
        got = value_and_grads(args, "onednn")
        hlo = value_and_grads.lower(args, "onednn").compile().as_text()
    assert_trees_close(got, value_and_grads(args, "wavefront"), 6 * 2 * 13 * 8 * 6)
    calls = [ln for ln in hlo.splitlines() if '"dlkit_onednn_lstm_fwd"' in ln]
    assert calls and all("f32[6,4,8]" in ln for ln in calls), calls  # (T, B/2, H) per device
    print("lstm sharded ok")


@needs_kernel
def test_native_flops_counts_the_lstm_calls():
    """Forward 2 T N (C + H) 4H per layer, backward twice that (XLA's cost analysis says 0)."""
    from dlkit.kernels.cpu import dispatch

    args = stack_args(5, 3, 4, 6, 2)
    text = jax.jit(lambda a: loss("onednn")(*a)).lower(args).as_text()
    fwd = 2 * 5 * 3 * ((4 + 6) + (6 + 6)) * 4 * 6  # layer 0: C=4; layer 1: C=H=6
    assert dispatch.native_flops(text) == fwd
    assert dispatch.native_flops(value_and_grads.lower(args, "onednn").as_text()) == 3 * fwd
