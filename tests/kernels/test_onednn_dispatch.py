"""dlkit.ops.conv2d's impl "onednn" (dlkit.kernels.cpu.dispatch) against impl "reference" (lax).

Which calls "auto" gives oneDNN; ops.conv2d forward and gradients per shape class; per-example
gradients under vmap; a vision model (impl auto vs reference) forward and gradients; and, in a
2-device subprocess, the sharded Runner (plain and a 2-member ensemble) training a small CNN:
its states equal lax's and the compiled step runs the custom call on each device's half batch.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fresh_process import run_python
from tolerances import assert_trees_close

import dlkit  # noqa: F401  (registers the oneDNN impl)
from dlkit import models
from dlkit.kernels import cpu
from dlkit.kernels.cpu import dispatch
from dlkit.ops import conv
from dlkit.train import create_train_state, make_optimizer, objectives
from dlkit.train.config import default_config
from dlkit.train.ensemble import ensemble_state
from dlkit.train.options import RunOptions
from dlkit.train.parallel import global_batch
from dlkit.train.runner import Runner

HERE = pathlib.Path(__file__).resolve()

needs_kernel = pytest.mark.skipif(
    not cpu.available(), reason=f"oneDNN conv kernels unavailable: {cpu.why_unavailable()}"
)


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


@needs_kernel
def test_auto_takes_onednn_for_float32_nhwc_only():
    x, w = _random((2, 8, 8, 3), 0), _random((3, 3, 3, 4), 1)
    assert conv.choose_impl("conv2d", x, w, 1, "SAME") == "onednn"
    assert conv.choose_impl("conv2d", x, w, 1, "SAME", platform="gpu") == "reference"
    bf16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    assert conv.choose_impl("conv2d", *bf16, 1, "SAME") == "fast"
    assert not dispatch.accepts(x[0], w, 1, "SAME")  # 3-D input
    assert not dispatch.accepts(x, w[..., :2, :], 1, "SAME")  # channel mismatch
    assert not dispatch.accepts(x[:, :2, :2], w, 1, "VALID")  # no output
    shapes = jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(w.shape, w.dtype)
    assert not dispatch.accepts(*shapes, 1, "SAME")  # shapes only (a model summary)
    assert dispatch.describe().startswith("oneDNN ")


def test_unavailable_library_falls_back_to_fast(monkeypatch):
    from dlkit.kernels.cpu import library

    monkeypatch.setattr(library, "available", lambda: False)
    monkeypatch.setattr(library, "why_unavailable", lambda: "not built")
    x, w = _random((2, 8, 8, 3), 0), _random((3, 3, 3, 4), 1)
    assert conv.choose_impl("conv2d", x, w, 1, "SAME") == "fast"
    assert dispatch.describe() == "XLA (not built)"
    got = conv.conv2d(x, w, None, 1, "SAME")  # auto, silently the fast path
    assert_trees_close(got, conv.conv2d(x, w, None, 1, "SAME", impl="reference"), 27)


CASES = {  # name: (x shape, w shape, stride, padding)
    "3x3_same": ((2, 8, 8, 8), (3, 3, 8, 16), 1, "SAME"),
    "3x3_s2_same": ((2, 9, 9, 8), (3, 3, 8, 8), 2, "SAME"),
    "5x5_valid_1ch": ((3, 12, 12, 1), (5, 5, 1, 6), 1, "VALID"),
    "1x1_s2": ((2, 8, 8, 16), (1, 1, 16, 32), 2, "VALID"),
    "int_pad": ((2, 7, 7, 4), (3, 3, 4, 5), 1, 1),
}


@needs_kernel
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_ops_conv2d_onednn_matches_reference(name, relu):
    xs, ws, stride, padding = CASES[name]
    x, w, b = _random(xs, 0), _random(ws, 1), _random(ws[3:], 2)

    def run(impl):
        f = lambda x, w, b: (conv.conv2d(x, w, b, stride, padding, impl, relu=relu) ** 2).sum()
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(x, w, b)

    n = ws[0] * ws[1] * max(ws[2], ws[3]) * xs[0] * xs[1] * xs[2]
    assert_trees_close(run("onednn"), run("reference"), n)


@needs_kernel
def test_a_bias_that_is_not_float32_is_added_after_the_call():
    x, w = _random((2, 8, 8, 3), 0), _random((3, 3, 3, 4), 1)
    b = _random((4,), 2, jnp.bfloat16)
    got = conv.conv2d(x, w, b, 1, "SAME", "onednn", relu=True)
    want = conv.conv2d(x, w, b, 1, "SAME", "reference", relu=True)
    assert got.dtype == want.dtype == jnp.float32
    assert_trees_close(got, want, 27)


@needs_kernel
def test_bias_and_relu_are_fused_into_the_calls():
    """relu(conv + b) is one forward call, its gradients the two backward calls: no XLA add,
    max or bias reduction around them."""
    x, w, b = _random((2, 8, 8, 3), 0), _random((3, 3, 3, 4), 1), _random((4,), 2)
    f = lambda x, w, b: conv.conv2d(x, w, b, 1, "SAME", "onednn", relu=True)
    text = jax.jit(f).lower(x, w, b).as_text()
    assert text.count("stablehlo.custom_call @dlkit_onednn_conv") == 1
    assert "stablehlo.add" not in text and "stablehlo.maximum" not in text
    grads = jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2))
    text = jax.jit(grads).lower(x, w, b).as_text()
    assert text.count("stablehlo.custom_call @dlkit_onednn_conv") == 3
    assert "stablehlo.maximum" not in text
    assert "stablehlo.reduce" not in text.split("@dlkit_onednn_conv_bwd_weights")[1]  # no bias sum


@needs_kernel
def test_per_example_gradients_through_ops():
    x, w = _random((5, 8, 8, 3), 0), _random((3, 3, 3, 4), 1)

    b = _random((4,), 2)

    def grads(impl):
        def loss(w, b, xi):
            return (conv.conv2d(xi[None], w, b, 1, "SAME", impl, relu=True) ** 2).sum()

        return jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(None, None, 0)))(w, b, x)

    got = grads("onednn")
    assert got[0].shape == (5, 3, 3, 3, 4) and got[1].shape == (5, 4)
    assert_trees_close(got, grads("reference"), 64 * 27)


@needs_kernel
def test_native_flops_counts_the_conv_calls_xla_costs_as_zero():
    """Forward, backward-data and backward-weights: 2 * B*Ho*Wo*Co * kh*kw*Ci each."""
    x, w = _random((4, 8, 8, 3), 0), _random((3, 3, 3, 5), 1)
    loss = lambda x, w: (conv.conv2d(x, w, None, 1, "SAME", impl="onednn") ** 2).sum()
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).as_text()
    assert dispatch.native_flops(text) == 3 * 2 * (4 * 8 * 8 * 5) * (3 * 3 * 3)
    ensemble = jax.vmap(jax.grad(loss, argnums=1), in_axes=(None, 0))
    text = jax.jit(ensemble).lower(x, jnp.stack([w, w])).as_text()  # 2 members; no dx (dropped)
    assert dispatch.native_flops(text) == 2 * 2 * 2 * (4 * 8 * 8 * 5) * (3 * 3 * 3)
    assert dispatch.native_flops(jax.jit(jnp.sin).lower(x).as_text()) == 0


@needs_kernel
@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_model_auto_matches_reference(name):
    x = _random((4, 28, 28, 1), 3)
    y = jnp.arange(4) % 10

    def run(impl):
        model = models.get(name, num_classes=10, impl=impl)
        params = model.init(jax.random.PRNGKey(0), x)

        def loss(p):
            logits = model.apply(p, x)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean()

        return jax.jit(jax.value_and_grad(loss))(params)

    assert_trees_close(run("auto"), run("reference"), 4 * 28 * 28 * 64)


@needs_kernel
def test_sharded_runner_runs_onednn_per_device():
    """2 CPU devices, the Runner's mesh: equal to lax, custom call on B/2, ensemble too."""
    out = run_python([str(HERE), "runner"], devices=2, timeout=900)
    assert "runner ok" in out.stdout and "ensemble ok" in out.stdout


def _train(ensemble: int, impl: str):
    """Two sharded Runner steps of a small CNN on 8x8 inputs: (state, eval sums, compiled HLO)."""
    c = default_config()
    c.batch_size, c.parallel.kind, c.parallel.ensemble_size = 8, "sharded", ensemble
    c.optimizer.learning_rate = 1e-2
    runner = Runner.create(RunOptions.from_config(c), objectives.get("cross_entropy"))
    model = models.get("cnn", num_classes=10, features=(8, 16), hidden=(16,), impl=impl)
    tx = make_optimizer(c.optimizer, 100)
    make = lambda seed: create_train_state(model, tx, jnp.zeros((1, 8, 8, 1)), seed)
    state = runner.place(ensemble_state(ensemble, 0, make))
    rng = np.random.default_rng(0)
    batches = [
        {
            "inputs": rng.random((8, 8, 8, 1), np.float32),
            "targets": rng.integers(0, 10, 8).astype(np.int32),
        }
        for _ in range(3)
    ]
    state, _ = runner.train(state, batches[:1])
    state, _ = runner.train(state, batches[1:])  # train_many
    sums = runner.eval(state, batches[0])
    with jax.set_mesh(runner.mesh):
        lowered = runner.train_one.lower(state, global_batch(batches[0], runner.mesh))
    return state, sums, lowered.compile().as_text()


def _case_runner():
    assert jax.device_count() == 2, jax.devices()
    for ensemble, label in ((1, "runner"), (2, "ensemble")):
        got, got_sums, hlo = _train(ensemble, "auto")
        want, want_sums, _ = _train(ensemble, "reference")
        assert_trees_close(got.params, want.params, 8 * 8 * 8 * 9 * 16)
        assert_trees_close(got_sums, want_sums, 8 * 8 * 8 * 9 * 16)
        calls = [line for line in hlo.splitlines() if '"dlkit_onednn_conv_fwd"' in line]
        lead = "" if ensemble == 1 else "2,"  # conv_0's output: half the batch per device
        assert any(f"= f32[{lead}4,8,8,8]" in line for line in calls), calls
        assert not any(f"= f32[{lead}8,8,8,8]" in line for line in calls), calls
        print(f"{label} ok")


if __name__ == "__main__":
    if sys.argv[1] == "runner":
        _case_runner()
