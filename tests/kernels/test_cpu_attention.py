"""dlkit.kernels.cpu.attention (the native CPU flash attention) against the reference.

Outputs and gradients over causal alignments, grouped-query heads, lengths that cut the kernel's
blocks and rows without keys, at every vector width the CPU runs; bitwise equal for 1 and 2
threads and on reruns; "auto" takes it on CPU for float32 calls without mask arrays; vmap; and, in
a 2-device subprocess, one call per device's half batch under a mesh, equal to the reference.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_cases import loss_and_grads, qkv
from fresh_process import run_python
from tolerances import assert_trees_close

import dlkit  # noqa: F401  (registers the kernel as the attention backend "cpu")
from dlkit.kernels import cpu
from dlkit.kernels.cpu import dispatch
from dlkit.kernels.cpu.attention import attention, widest_vector
from dlkit.ops.attention import attention_reference
from dlkit.ops.attention_dispatch import choose_implementation, dot_product_attention

HERE = pathlib.Path(__file__).resolve()

pytestmark = pytest.mark.skipif(
    not cpu.available(), reason=f"native CPU kernels unavailable: {cpu.why_unavailable()}"
)


# (B, Sq, Sk, H, Hkv, D): the block size (64) cut both ways, Sq != Sk, GQA and MQA, D not a
# multiple of 16, two rows.
SHAPES = [
    (2, 128, 128, 4, 4, 32),
    (2, 100, 77, 4, 2, 24),
    (1, 77, 150, 6, 3, 40),
    (1, 130, 50, 2, 1, 16),
    (3, 2, 3, 1, 1, 8),
]


@pytest.mark.parametrize("causal", [False, True, "bottom_right"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_reference(shape, causal):
    q, k, v = qkv(*shape)
    got = loss_and_grads(lambda *a: attention(*a, causal=causal, threads=2), q, k, v)
    want = loss_and_grads(lambda *a: attention_reference(*a, causal=causal), q, k, v)
    assert_trees_close(got, want, n=shape[2] * shape[5])


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "x".join(map(str, s)))
def test_every_vector_width_matches_the_reference(shape, width):
    """Each build of the kernels (AVX-512F, AVX2 + FMA, baseline) that this CPU runs."""
    if width > widest_vector():
        pytest.skip(f"this CPU runs vectors of up to {widest_vector()} floats")
    q, k, v = qkv(*shape)
    got = loss_and_grads(lambda *a: attention(*a, causal=True, vector_width=width), q, k, v)
    want = loss_and_grads(lambda *a: attention_reference(*a, causal=True), q, k, v)
    assert_trees_close(got, want, n=shape[2] * shape[5])


def test_a_width_the_cpu_lacks_is_one_line():
    q, k, v = qkv(1, 8, 8, 1, 1, 8)
    for width in (32, 3, 2 * widest_vector()):
        with pytest.raises(ValueError, match="not one this CPU runs"):
            attention(q, k, v, vector_width=width)


def test_rows_without_keys_are_zero_with_zero_gradients():
    q, k, v = qkv(1, 130, 50, 2, 1, 16)  # bottom-right: the first 80 queries see no key
    out, (dq, _, _) = loss_and_grads(lambda *a: attention(*a, causal="bottom_right"), q, k, v)
    assert np.isfinite(np.asarray(out)).all() and np.isfinite(np.asarray(dq)).all()
    np.testing.assert_array_equal(np.asarray(out[:, :80]), 0.0)
    np.testing.assert_array_equal(np.asarray(dq[:, :80]), 0.0)
    assert np.abs(np.asarray(out[:, 80:])).min() > 0


def test_threads_and_reruns_are_bitwise_equal():
    q, k, v = qkv(4, 96, 96, 4, 2, 32)
    runs = [
        loss_and_grads(lambda *a, t=t: attention(*a, causal=True, threads=t), q, k, v)
        for t in (1, 2, 1)
    ]
    for run in runs[1:]:
        for a, b in zip(jax.tree.leaves(run), jax.tree.leaves(runs[0]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_auto_takes_the_kernel_for_float32_without_mask_arrays():
    q, k, v = qkv(2, 16, 16, 2, 2, 8)
    assert choose_implementation(q, k) == "cpu"
    assert choose_implementation(q, k, platform="gpu") == "xla"
    lengths = jnp.asarray([16, 8], jnp.int32)
    assert choose_implementation(q, k, kv_lengths=lengths) == "xla"
    bf16 = q.astype(jnp.bfloat16)
    assert choose_implementation(bf16, bf16) == "xla"
    shapes = jax.ShapeDtypeStruct(q.shape, q.dtype)
    assert not dispatch.attention_accepts(shapes, shapes)  # shapes only (a model summary)
    out, name = dot_product_attention(q, k, v, causal=True, return_choice=True)
    assert name == "cpu"
    assert_trees_close(out, attention_reference(q, k, v, causal=True), n=16 * 8)


def test_explicit_cpu_with_a_mask_is_one_line():
    q, k, v = qkv(1, 4, 4, 2, 2, 8)
    with pytest.raises(ValueError, match="takes causal but no mask, segment_ids or kv_lengths"):
        dot_product_attention(q, k, v, mask=jnp.ones((1, 1, 4, 4), bool), implementation="cpu")
    with pytest.raises(ValueError, match="needs float32 q, k, v; got bfloat16"):
        attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)))


def test_explicit_cpu_off_the_cpu_backend_is_one_line(monkeypatch):
    q, k, v = qkv(1, 4, 4, 2, 2, 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="'cpu' runs on the CPU backend .backend is 'gpu'.; use"):
        dot_product_attention(q, k, v, implementation="cpu")


def test_vmap_and_flops():
    q, k, v = qkv(2, 24, 24, 2, 1, 8)
    stacked = tuple(jnp.stack([x, x[::-1]]) for x in (q, k, v))
    got = jax.vmap(lambda *a: attention(*a, causal=True))(*stacked)
    want = jax.vmap(lambda *a: attention_reference(*a, causal=True))(*stacked)
    assert_trees_close(got, want, n=24 * 8)
    grad = jax.grad(lambda q, k, v: attention(q, k, v).sum(), (0, 1, 2))
    text = jax.jit(grad).lower(q, k, v).as_text()
    assert dispatch.native_flops(text) == 2.0 * 2 * 2 * 24 * 24 * 8 * (2 + 5)


def test_sharded_calls_run_per_device():
    """2 CPU devices: under a mesh each device's call takes half the batch; equals the reference."""
    assert "mesh ok" in run_python([str(HERE), "mesh"], devices=2).stdout


def _case_mesh():
    assert jax.device_count() == 2, jax.devices()
    mesh = jax.make_mesh((2,), ("data",))
    q, k, v = qkv(4, 32, 32, 2, 2, 8)
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    q, k, v = (jax.device_put(x, batch) for x in (q, k, v))
    fn = lambda *a: dot_product_attention(*a, causal=True)  # noqa: E731
    with jax.set_mesh(mesh):
        got = loss_and_grads(fn, q, k, v)
        hlo = jax.jit(fn).lower(q, k, v).compile().as_text()
    want = loss_and_grads(lambda *a: attention_reference(*a, causal=True), q, k, v)
    assert_trees_close(got, want, n=32 * 8)
    calls = [line for line in hlo.splitlines() if '"dlkit_cpu_attn_fwd"' in line]
    assert calls and all("f32[2,32,2,8]" in line for line in calls), calls
    print("mesh ok")


if __name__ == "__main__":
    if sys.argv[1] == "mesh":
        _case_mesh()
