"""The oneDNN conv kernels (dlkit.kernels.cpu) against lax.conv_general_dilated.

Forward, input gradient and weight/bias gradients (oneDNN's and the im2col dot) for each shape
class dlkit's models use (3x3 stride 1 and 2, asymmetric and VALID padding, 1x1 shortcuts, 1- and
3-channel first layers, a map smaller than the kernel), fused bias + ReLU, jit, vmap (per-example
gradients, ensembles), 2-device shard_map (a subprocess), bitwise determinism, torch's libgomp
in the same process, and the unavailable path. Each compared value is a sum of n products; the
tolerance is rtol_for(n) times the sum of their magnitudes (the same conv of |x| and |w|).
"""

import functools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fresh_process import run_python
from jax import lax
from tolerances import assert_trees_close, rtol_for

from dlkit.kernels import cpu
from dlkit.kernels.cpu import library
from dlkit.kernels.cpu.conv import weight_grad_impl

HERE = pathlib.Path(__file__).resolve()
DN = ("NHWC", "HWIO", "NHWC")

needs_kernel = pytest.mark.skipif(
    not cpu.available(), reason=f"oneDNN conv kernels unavailable: {cpu.why_unavailable()}"
)


def ref_conv(x, w, b, stride, pads, relu):
    """The reference: lax's convolution, bias, ReLU."""
    y = lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=DN)
    y = y + b if b is not None else y
    return jnp.maximum(y, 0) if relu else y


def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@functools.partial(jax.jit, static_argnames=("fn", "stride", "pads", "relu"))
def _run(x, w, b, g, *, fn, stride, pads, relu):
    """(y, dx, dw, db) of fn ('onednn', 'onednn/im2col' or 'lax') for cotangent g, in one
    compiled call."""
    if fn == "lax":
        f = ref_conv
    else:
        weight_grad = fn.partition("/")[2] or "onednn"
        f = functools.partial(cpu.conv2d, weight_grad=weight_grad)
    y, vjp = jax.vjp(lambda x, w, b: f(x, w, b, stride, pads, relu), x, w, b)
    return (y, *vjp(g))


@functools.partial(jax.jit, static_argnames=("stride", "pads"))
def _magnitudes(x, w, b, g, *, stride, pads):
    """Sums of |terms| of y, dx, dw, db: the scale of each value's rounding error."""
    ax, aw, ag = jnp.abs(x), jnp.abs(w), jnp.abs(g)
    y, vjp = jax.vjp(lambda x, w: ref_conv(x, w, None, stride, pads, False), ax, aw)
    dx, dw = vjp(ag)
    return y + jnp.abs(b), dx, dw, ag.sum((0, 1, 2))


def _check(b_, h, w_, ci, co, k, stride, pads, relu=False, bias=True, seed=0, fn="onednn"):
    x, w = _random((b_, h, w_, ci), seed), _random((k, k, ci, co), seed + 1)
    b = _random((co,), seed + 2) if bias else None
    ho = (h + sum(pads[0]) - k) // stride[0] + 1
    wo = (w_ + sum(pads[1]) - k) // stride[1] + 1
    g = _random((b_, ho, wo, co), seed + 3)
    kw = {"stride": stride, "pads": pads, "relu": relu}
    got = _run(x, w, b, g, fn=fn, **kw)
    want = _run(x, w, b, g, fn="lax", **kw)
    scale = _magnitudes(x, w, b if bias else jnp.zeros(co), g, stride=stride, pads=pads)
    terms = {"y": k * k * ci + 1, "dx": k * k * co, "dw": b_ * ho * wo, "db": b_ * ho * wo}
    for name, a, r, s in zip(terms, got, want, scale, strict=True):
        if r is None:
            assert a is None, name
            continue
        assert a.shape == r.shape, (name, a.shape, r.shape)
        err = np.abs(np.asarray(a) - np.asarray(r))
        bound = rtol_for(np.float32, terms[name]) * np.asarray(s) + 1e-30
        assert (err <= bound).all(), f"{name}: max err/bound {(err / bound).max():.2f}"
        assert np.abs(np.asarray(r)).max() > 0, f"{name} is all zeros: the test cannot fail"


SHAPES = {  # name: (B, H, W, C_in, C_out, k, stride, pads)
    "3x3_s1_same": (2, 8, 8, 16, 32, 3, (1, 1), ((1, 1), (1, 1))),
    "3x3_s2": (2, 9, 8, 8, 16, 3, (2, 2), ((1, 1), (1, 1))),
    "3x3_s2_asym": (2, 8, 8, 8, 8, 3, (2, 2), ((0, 1), (0, 1))),  # SAME with stride 2
    "5x5_valid": (3, 12, 10, 4, 6, 5, (1, 1), ((0, 0), (0, 0))),
    "mixed_stride_pad": (2, 9, 11, 5, 7, 3, (2, 1), ((1, 2), (0, 1))),
    "1x1_s1": (2, 8, 8, 16, 32, 1, (1, 1), ((0, 0), (0, 0))),
    "1x1_s2_shortcut": (2, 8, 8, 16, 32, 1, (2, 2), ((0, 0), (0, 0))),
    "first_1ch_5x5": (4, 28, 28, 1, 6, 5, (1, 1), ((2, 2), (2, 2))),  # LeNet
    "first_3ch_3x3": (2, 16, 16, 3, 16, 3, (1, 1), ((1, 1), (1, 1))),  # CIFAR stem
    "first_3ch_7x7_s2": (2, 32, 32, 3, 8, 7, (2, 2), ((3, 3), (3, 3))),  # ImageNet stem
    "map_smaller_than_kernel": (2, 2, 2, 8, 8, 3, (1, 1), ((1, 1), (1, 1))),  # VGG's last stage
}


@needs_kernel
@pytest.mark.parametrize("weight_grad", ["onednn", "im2col"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_lax(name, weight_grad):
    b, h, w, ci, co, k, stride, pads = SHAPES[name]
    _check(b, h, w, ci, co, k, stride, pads, fn=f"onednn/{weight_grad}")


def test_auto_weight_grad_takes_im2col_for_small_maps_without_avx512():
    assert weight_grad_impl((4, 4), (3, 3), 8) == "im2col"
    assert weight_grad_impl((2, 2), (3, 3), 4) == "im2col"
    assert weight_grad_impl((4, 4), (3, 3), 16) == "onednn"  # AVX-512: oneDNN's own
    assert weight_grad_impl((8, 8), (3, 3), 8) == "onednn"  # a bigger map
    assert weight_grad_impl((4, 4), (1, 1), 8) == "onednn"  # a 1x1 kernel


@needs_kernel
def test_bad_weight_grad_is_one_line():
    x, w = _random((1, 4, 4, 2), 0), _random((3, 3, 2, 2), 1)
    with pytest.raises(ValueError, match="weight_grad='dot'; use one of"):
        cpu.conv2d(x, w, weight_grad="dot")


@needs_kernel
@pytest.mark.parametrize("bias", [True, False])
def test_fused_bias_relu(bias):
    _check(2, 8, 8, 8, 16, 3, (1, 1), ((1, 1), (1, 1)), relu=True, bias=bias)
    _check(2, 8, 8, 3, 8, 3, (2, 2), ((1, 1), (1, 1)), relu=True, bias=bias, seed=5)


@needs_kernel
def test_padding_strings_and_no_bias():
    x, w = _random((2, 7, 7, 4), 0), _random((3, 3, 4, 5), 1)
    for padding in ("SAME", "VALID", 1):
        if isinstance(padding, str):
            pads = tuple(tuple(p) for p in lax.padtype_to_pads((7, 7), (3, 3), (2, 2), padding))
        else:
            pads = ((1, 1), (1, 1))
        got = cpu.conv2d(x, w, None, 2, padding)
        want = ref_conv(x, w, None, (2, 2), pads, False)
        np.testing.assert_allclose(got, want, rtol=rtol_for(np.float32, 36), atol=1e-5)


def _net(conv, params, x):
    """A small conv net: 3->8 stride 2 + ReLU, 8->8 3x3 + ReLU, mean -> logits."""
    h = conv(x, params["w1"], params["b1"], (2, 2), ((1, 1), (1, 1)), True)
    h = conv(h, params["w2"], params["b2"], (1, 1), ((1, 1), (1, 1)), True)
    return h.mean((1, 2)) @ params["head"]


def _params(seed=0):
    return {
        "w1": _random((3, 3, 3, 8), seed) * 0.3,
        "b1": _random((8,), seed + 1) * 0.1,
        "w2": _random((3, 3, 8, 8), seed + 2) * 0.2,
        "b2": _random((8,), seed + 3) * 0.1,
        "head": _random((8, 4), seed + 4),
    }


@needs_kernel
@pytest.mark.parametrize("weight_grad", ["onednn", "im2col"])  # both convs' outputs are 4x4
def test_per_example_gradients_under_vmap(weight_grad):
    params, x = _params(), _random((6, 8, 8, 3), 9)
    conv = functools.partial(cpu.conv2d, weight_grad=weight_grad)

    def per_example(conv):
        loss = lambda p, xi: (_net(conv, p, xi[None]) ** 2).sum()
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, x)

    got, want = per_example(conv), per_example(ref_conv)
    assert got["w1"].shape == (6, 3, 3, 3, 8)
    assert_trees_close(got, want, n=9 * 8 * 16)


@needs_kernel
@pytest.mark.parametrize("weight_grad", ["onednn", "im2col"])
def test_ensemble_vmap_over_weights_and_inputs(weight_grad):
    conv = functools.partial(cpu.conv2d, weight_grad=weight_grad)
    ens = jax.tree.map(lambda *a: jnp.stack(a), *[_params(10 * i) for i in range(3)])
    x = _random((3, 4, 8, 8, 3), 7)

    def grads(conv, in_axes):
        loss = lambda p, x: (_net(conv, p, x) ** 2).sum()
        return jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=in_axes))(
            ens, x if in_axes[1] == 0 else x[0]
        )

    for in_axes in ((0, 0), (0, None)):
        got, want = grads(conv, in_axes), grads(ref_conv, in_axes)
        assert_trees_close(got, want, n=4 * 9 * 8 * 16)


@needs_kernel
def test_deterministic_bitwise():
    """The same jitted fwd+bwd twice (and in a second compiled program) gives identical bits."""
    x, w, b = _random((8, 16, 16, 16), 0), _random((3, 3, 16, 32), 1), _random((32,), 2)
    g = _random((8, 16, 16, 32), 3)
    kw = {"stride": (1, 1), "pads": ((1, 1), (1, 1)), "relu": True}
    first = jax.device_get(_run(x, w, b, g, fn="onednn", **kw))
    second = jax.device_get(_run(x, w, b, g, fn="onednn", **kw))
    grad_w = jax.jit(jax.grad(lambda w: (cpu.conv2d(x, w, b, 1, 1, True) * g).sum()))(w)
    for a, r in zip(first, second, strict=True):
        assert np.array_equal(a, r)
    assert np.array_equal(grad_w, first[2])


@needs_kernel
def test_small_convs_run_on_one_thread():
    """A call under 1e8 forward FLOPs (lenet5's convs) runs on one thread whatever `threads` asks:
    its results equal threads=1's bit for bit (on two threads its weight and bias gradients
    differ in the last bits)."""
    x, w, b = _random((128, 10, 10, 6), 0), _random((5, 5, 6, 16), 1), _random((16,), 2)

    def run(threads):
        def f(x, w, b):
            return cpu.conv2d(x, w, b, 1, "VALID", True, threads=threads)

        y, vjp = jax.jit(lambda x, w, b: jax.vjp(f, x, w, b))(x, w, b)
        return jax.device_get((y, *vjp(0.37 + y)))

    for one, two in zip(run(1), run(2), strict=True):
        assert np.array_equal(one, two)


@needs_kernel
def test_concurrent_calls_from_threads():
    """Calls from 4 Python threads at once (new shapes: plans created concurrently, and a shared
    one) give the same bits as the same calls made one at a time afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    grad = jax.jit(jax.grad(lambda x, w: (cpu.conv2d(x, w, None, 1, 1, True) ** 2).sum(), (0, 1)))
    cases = [(_random((3, 10 + i % 2, 9, 5), i), _random((3, 3, 5, 6), 10 + i)) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: jax.device_get(grad(*c)), cases))
    for case, got in zip(cases, together, strict=True):
        for a, r in zip(got, jax.device_get(grad(*case)), strict=True):
            assert np.array_equal(a, r)


@needs_kernel
def test_bad_input_is_one_line_error():
    x, w = jnp.zeros((2, 8, 8, 3)), jnp.zeros((3, 3, 4, 8))
    with pytest.raises(ValueError, match="3 channels"):
        cpu.conv2d(x, w)
    with pytest.raises(ValueError, match="float32"):
        cpu.conv2d(x.astype(jnp.bfloat16), jnp.zeros((3, 3, 3, 8), jnp.bfloat16))
    with pytest.raises(ValueError, match="larger than"):
        cpu.conv2d(jnp.zeros((1, 2, 2, 3)), jnp.zeros((3, 3, 3, 8)))


def test_unavailable_library_is_reported_in_one_line(monkeypatch, tmp_path):
    """A missing or broken library: available() False, a one-line reason, conv2d raises it."""
    try:
        for fake in (None, tmp_path / "_onednn_conv.so"):
            if fake is not None:
                fake.write_bytes(b"not an ELF file")
            monkeypatch.setattr(library, "library_path", lambda fake=fake: fake)
            library._state.cache_clear()
            assert cpu.available() is False
            reason = cpu.why_unavailable()
            assert reason and "\n" not in reason and "Traceback" not in reason
            with pytest.raises(RuntimeError, match="unavailable"):
                cpu.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)))
    finally:
        monkeypatch.undo()
        library._state.cache_clear()  # the real library again (registration happens once)


# Counts the page faults taken by trap (perf's software counter, every thread of the process):
# pages that madvise(MADV_POPULATE_WRITE) maps are not among them. Prints "skip: why" when the
# machine cannot tell (no perf events, or a kernel before 5.14 without the advice).
PREFAULT_CASE = r"""
import ctypes, mmap, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
probe = mmap.mmap(-1, 1 << 16)
addr = ctypes.addressof(ctypes.c_char.from_buffer(probe))
if libc.madvise(addr, 1 << 16, 23) != 0:  # MADV_POPULATE_WRITE
    raise SystemExit(f"skip: madvise(MADV_POPULATE_WRITE) failed (errno {ctypes.get_errno()})")
attr = bytearray(128)  # perf_event_attr: software, page faults, inherit, user mode only
struct.pack_into("IIQ", attr, 0, 1, 128, 2)
struct.pack_into("Q", attr, 40, (1 << 1) | (1 << 5) | (1 << 6))
fd = libc.syscall(298, ctypes.create_string_buffer(bytes(attr), 128), 0, -1, -1, 0)
if fd < 0:
    raise SystemExit(f"skip: perf_event_open failed (errno {ctypes.get_errno()})")
import jax, jax.numpy as jnp
from dlkit.kernels import cpu
faults = lambda: struct.unpack("Q", os.read(fd, 8))[0]
x, w, b = jnp.ones((32, 64, 64, 16)), jnp.full((1, 1, 16, 128), 0.01), jnp.zeros(128)
conv = jax.jit(lambda x, w, b: cpu.conv2d(x, w, b, 1, "VALID", False))  # y: 64 MiB, mmapped
y, counts = conv(x, w, b).block_until_ready(), []
for _ in range(3):
    del y
    n = faults()
    y = conv(x, w, b).block_until_ready()
    counts.append(faults() - n)
print(y.nbytes // 4096, min(counts))
"""


@needs_kernel
def test_a_fresh_output_is_mapped_without_a_fault_per_page():
    """Without the door, XLA mmaps an output afresh on every call: the conv maps its pages with
    one madvise per thread before writing them, instead of taking a fault per 4 KiB page."""
    out = _python(PREFAULT_CASE)
    if out.returncode != 0 and "skip:" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-2000:]
    pages, faults = map(int, out.stdout.split())
    assert pages == 16384 and faults < pages // 16, (pages, faults)


def test_import_does_not_load_the_library():
    code = (
        "import dlkit, dlkit.kernels.cpu, pathlib;"
        "maps = pathlib.Path('/proc/self/maps').read_text();"
        "assert '_onednn_conv' not in maps and 'libdnnl' not in maps, 'loaded at import'"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]


def test_wheel_libdnnl_is_found_for_the_preload_fallback():
    """When the .so's rpath misses, libdnnl.so.3 comes from the onednn wheel's file list."""
    import importlib.metadata

    try:
        importlib.metadata.distribution(library.ONEDNN_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{library.ONEDNN_DIST} is not installed")
    path = library._wheel_libdnnl()
    assert path is not None and path.name.startswith("libdnnl.so.3") and path.is_file()


def test_vendored_ffi_headers_match_jaxlib():
    """The XLA FFI headers the library builds against have the installed jaxlib's API major."""
    import re

    def major(include):
        text = (pathlib.Path(include) / "xla/ffi/api/c_api.h").read_text()
        return re.search(r"#define XLA_FFI_API_MAJOR (\d+)", text).group(1)

    assert major(library.HERE / "include") == major(jax.ffi.include_dir())


def _python(code: str) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh process (the repo and tests/ on its path), unchecked."""
    return run_python(["-c", code], timeout=300, check=False)


@needs_kernel
def test_shard_map_on_two_devices():
    """jit over a 2-device batch-sharded mesh: each device runs its half; grads equal lax's
    (and, in the same process, the oneDNN LSTM's equal the wavefront scan's, and the batch norm
    takes its reference)."""
    out = run_python([str(HERE), "shard_map"], devices=2).stdout
    assert "shard_map ok" in out and "lstm sharded ok" in out and "batch norm sharded ok" in out


@needs_kernel
@pytest.mark.parametrize("torch_first", [True, False])
def test_with_torch_in_the_same_process(torch_first):
    """torch ships its own libgomp: both orders of loading run both libraries' convs."""
    pytest.importorskip("torch")
    out = run_python([str(HERE), "torch_first" if torch_first else "torch_last"]).stdout
    assert "torch ok" in out


def _case_shard_map():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    assert jax.device_count() == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    params, x = _params(), _random((8, 8, 8, 3), 4)
    x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    sharded = functools.partial(cpu.conv2d, mesh=mesh)
    loss = lambda conv: jax.jit(jax.value_and_grad(lambda p: (_net(conv, p, x) ** 2).mean()))
    got, want = loss(sharded)(params), loss(ref_conv)(params)
    assert_trees_close(got, want, n=8 * 9 * 8 * 16)
    hlo = loss(sharded).lower(params).compile().as_text()
    # per-device custom calls: the forward conv's input is half the batch
    calls = [line for line in hlo.splitlines() if '"dlkit_onednn_conv_fwd"' in line]
    assert any("f32[4,8,8,3]" in line for line in calls), calls
    assert not any("f32[8," in line for line in calls), calls
    print("shard_map ok")


def _case_torch(torch_first: bool):
    if torch_first:
        import torch
    x, w = _random((2, 8, 8, 3), 0), _random((3, 3, 3, 4), 1)
    got = cpu.conv2d(x, w, None, 1, 1)
    if not torch_first:
        import torch
    t = torch.nn.functional.conv2d(
        torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2),
        torch.from_numpy(np.asarray(w)).permute(3, 2, 0, 1),
        padding=1,
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(got, t.numpy(), rtol=rtol_for(np.float32, 27), atol=1e-5)
    again = cpu.conv2d(x, w, None, 1, 1)
    assert np.array_equal(got, again)
    print("torch ok")


if __name__ == "__main__":
    case = sys.argv[1]
    if case == "shard_map":
        _case_shard_map()
        import test_onednn_lstm  # the LSTM's sharded case, in the same 2-device process

        test_onednn_lstm.case_sharded()
        import test_cpu_batch_norm

        test_cpu_batch_norm.case_sharded()
    else:
        _case_torch(case == "torch_first")
