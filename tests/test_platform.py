"""dlkit.platform: the pure choices, and configure() setting up a fresh process (subprocesses:
it changes the process) on the CPU backend only, with the collective-hang fault injected."""

import os
import resource
import statistics
import subprocess
import sys

import pytest

from dlkit import platform

TWO_CORES = "platform.CpuFeatures(cores=2, physical_cores=2)"


def run_fresh(script: str, **env) -> subprocess.CompletedProcess:
    """`script` in a fresh Python on the CPU backend, without NPROC or XLA_FLAGS from outside."""
    base = {k: v for k, v in os.environ.items() if k not in ("NPROC", "XLA_FLAGS")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_detect_reads_this_machine():
    f = platform.CpuFeatures.detect()
    assert f.cores >= 1
    assert f.flags <= frozenset(platform.ISA_FLAGS)


def test_a_device_per_physical_core():
    f = platform.CpuFeatures("AuthenticAMD", "EPYC", frozenset({"avx2"}), cores=4, physical_cores=2)
    assert f.per_core_devices() == 2  # SMT siblings share a core: one device per core
    assert platform.CpuFeatures(cores=1).per_core_devices() == 1
    many = platform.CpuFeatures(cores=64, physical_cores=64)
    assert many.per_core_devices() == platform.MAX_DEVICES


@pytest.mark.parametrize(
    "asked, split, want",
    [((), True, 2), ((0,), False, 1), ((1,), True, 1), ((0, 4), True, 4), ((1, 0), True, 2)],
)
def test_choose_devices_takes_the_most_any_run_asks(asked, split, want):
    two = platform.CpuFeatures(cores=2, physical_cores=2)
    assert platform.choose_devices(asked, two, split) == want


def test_collective_threads_two_per_device():
    assert platform.collective_threads(1, 2) == 2
    assert platform.collective_threads(2, 2) == 4  # 2 and 3 threads hang (BUILD_NOTES)
    assert platform.collective_threads(4, 2) == 8
    assert platform.collective_threads(2, 16) == 16


@pytest.mark.parametrize(
    "user, want_nproc, warns",
    [(None, "4", False), ("8", "8", False), ("2", "2", True), ("x", "x", True)],
)
def test_reserve_threads_sets_or_checks_nproc(user, want_nproc, warns):
    environ = {} if user is None else {"NPROC": user}
    _, note = platform._reserve_threads(2, 2, environ)
    assert environ["NPROC"] == want_nproc
    assert (note is not None and "may hang" in note) == warns


def test_describe_says_what_was_set():
    f = platform.CpuFeatures("GenuineIntel", "Xeon", frozenset({"avx512f", "amx_bf16"}), 2)
    text = platform.Platform(f, devices=2, threads=4, keep_malloc_arena=True).describe()
    assert "Xeon" in text and "amx_bf16" in text and "2 cores" in text
    assert "2 CPU devices, XLA threads 4, malloc keep-arena on" in text
    assert "caller's thread" not in text
    sync = platform.Platform(f, keep_malloc_arena=True, sync_dispatch=True).describe()
    assert "malloc keep-arena on, dispatch on the caller's thread" in sync
    assert "convs" not in text
    with_convs = platform.Platform(f, convs="oneDNN 3.2.0", omp_wait="PASSIVE").describe()
    assert ", convs: oneDNN 3.2.0, OpenMP wait passive" in with_convs
    assert "threefry" not in with_convs
    assert platform.Platform(f, threefry_unrolled=True).describe().endswith(", threefry unrolled")


@pytest.mark.parametrize(
    "user, passive, want",
    [(None, True, "PASSIVE"), ("ACTIVE", True, "ACTIVE"), (None, False, None)],
)
def test_openmp_threads_sleep_when_idle_unless_set(user, passive, want, monkeypatch):
    monkeypatch.setattr(platform, "_backend_started", lambda: False)  # as before JAX starts
    monkeypatch.setattr(platform.jax.config, "update", lambda *a: None)
    environ = {"JAX_PLATFORMS": "cpu", **({"OMP_WAIT_POLICY": user} if user else {})}
    f = platform.CpuFeatures("GenuineIntel", "Xeon", frozenset(), 1, 1)
    done = platform.configure(
        omp_passive=passive, features=f, keep_malloc_arena=False, environ=environ
    )
    assert environ.get("OMP_WAIT_POLICY") == want and done.omp_wait == want


def test_off_switch_and_a_started_backend_change_nothing():
    import jax

    jax.devices()  # the backend is up (this test process): the count can no longer change
    environ = {"DLKIT_PLATFORM": "off"}
    assert platform.configure(environ=environ).describe().endswith("[DLKIT_PLATFORM=off]")
    environ = {}
    late = platform.configure(environ=environ, keep_malloc_arena=False)
    assert late.devices == jax.local_device_count() and late.threads is None and environ == {}
    assert not late.sync_dispatch and jax.config.values["jax_cpu_enable_async_dispatch"]


THREEFRY = """
import jax, jax.numpy as jnp, numpy as np
from dlkit import platform
from dlkit.ops.dropout import dropout

DRAWS = {  # fresh functions each time: jit caches a lowering per function
    "bits": "lambda k: jax.random.bits(k, (2, 5, 5, 7))",
    "bits8": "lambda k: jax.random.bits(k, (3, 5), jnp.uint8)",
    "normal": "lambda k: jax.random.normal(k, (3, 3, 16, 8))",
    "truncated": "lambda k: jax.random.truncated_normal(k, -2.0, 2.0, (9, 7))",
    "uniform": "lambda k: jax.random.uniform(k, (4, 33), minval=-1.0)",
    "bernoulli": "lambda k: jax.random.bernoulli(k, 0.3, (6, 11))",
    "split": "lambda k: jax.random.key_data(jax.random.split(k, 5))",
    "fold_in": "lambda k: jax.random.key_data(jax.random.fold_in(k, 7))",
    "legacy": "lambda k: jax.random.normal(jax.random.PRNGKey(3), (4, 3))",
    "dropout": "lambda k: dropout(jnp.ones((8, 9)), 0.25, k)",
}

def draws():
    k = jax.random.key(3)
    out = {name: np.asarray(jax.jit(eval(fn))(k)) for name, fn in DRAWS.items()}
    text = jax.jit(eval(DRAWS["bits"])).lower(k).as_text()
    return out, "stablehlo.while" in text

def same(a, b):
    return all(a[n].dtype == b[n].dtype and np.array_equal(a[n], b[n]) for n in DRAWS)

before, rolled_before = draws()
unrolled = platform.unroll_threefry()
after, rolled_after = draws()
platform.unroll_threefry(False)  # back to jax's rule (A/B)
again, rolled_again = draws()
print(unrolled, rolled_before, rolled_after, rolled_again == rolled_before)
print(same(before, after) and same(before, again))
"""


def test_unrolled_threefry_draws_the_same_bits():
    """After unroll_threefry no random draw lowers to a loop on CPU, and every kind of draw
    (bits, samplers, split, fold_in, legacy keys, dlkit's dropout) gives the same bits as before;
    it acts exactly when this jax rolled the loop (jax 0.10; later jax unrolls it itself)."""
    unrolled, rolled_before, rolled_after, restored, same = run_fresh(THREEFRY).stdout.split()[-5:]
    assert same == "True" and rolled_after == "False" and restored == "True"
    assert unrolled == rolled_before


def test_threefry_is_unrolled_only_when_asked(monkeypatch):
    asked = []
    monkeypatch.setattr(platform, "unroll_threefry", lambda: asked.append(1) or True)
    assert not platform.choose_threefry({})
    assert not platform.choose_threefry({"DLKIT_THREEFRY": "rolled"})
    assert asked == [] and platform.choose_threefry({"DLKIT_THREEFRY": "Unrolled"}) and asked == [1]
    monkeypatch.setattr(platform, "_backend_started", lambda: False)  # as before JAX starts
    monkeypatch.setattr(platform.jax.config, "update", lambda *a: None)
    f = platform.CpuFeatures("GenuineIntel", "Xeon", frozenset(), 1, 1)
    for environ, want in (({}, False), ({"DLKIT_THREEFRY": "unrolled"}, True)):
        done = platform.configure(features=f, keep_malloc_arena=False, environ=environ)
        assert done.threefry_unrolled == want
        assert done.describe().endswith(", threefry unrolled") == want


SPLIT = f"""
import os
import jax
from dlkit import platform
done = platform.configure(features={TWO_CORES})
n = jax.device_count()
eigen = sum(open(f"/proc/self/task/{{t}}/comm").read().startswith("tf_XLAEigen")
            for t in os.listdir("/proc/self/task"))
print(done.describe())
print(done.devices, n, eigen >= 2 * n)
"""


@pytest.mark.parametrize(
    "xla_flags, want",
    [("", "2 2 True"), ("--xla_force_host_platform_device_count=3", "3 3 True")],
)
def test_configure_splits_the_cpu_before_jax_starts(xla_flags, want):
    out = run_fresh(SPLIT, XLA_FLAGS=xla_flags)
    assert out.stdout.strip().splitlines()[-1] == want
    assert ("device count set by XLA_FLAGS" in out.stdout) == bool(xla_flags)


ACCELERATOR = f"""
import ctypes, os
import jax
from dlkit import platform
ctypes.CDLL = None  # mallopt would fail loudly
before = dict(os.environ)
done = platform.configure(features={TWO_CORES})
assert done.backend == "cuda" and done.devices == 1 and not done.keep_malloc_arena, done
assert dict(os.environ) == before and jax.config.jax_num_cpu_devices == -1
assert jax.config.values["jax_cpu_enable_async_dispatch"] and not done.sync_dispatch
print(done.describe())
"""


def test_nothing_is_touched_when_the_backend_will_be_an_accelerator():
    out = run_fresh(ACCELERATOR, JAX_PLATFORMS="cuda")  # never started: no GPU needed
    assert "backend cuda, host left as it is" in out.stdout


ALL_REDUCE = f"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from dlkit import platform
platform.configure(features={TWO_CORES})
mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
rep = NamedSharding(mesh, P())

@jax.jit
def step(w, x):
    g = jax.grad(lambda w: jnp.mean((jnp.tanh(x @ w[0]) @ w[1]) ** 2))(w)
    return jax.lax.with_sharding_constraint([a - 1e-3 * b for a, b in zip(w, g)], rep)

w = jax.device_put([jnp.full((512, 512), 0.01)] * 2, rep)
x = jax.device_put(jnp.ones((256, 512)), NamedSharding(mesh, P("data")))
for _ in range(300):
    w = step(w, x)
print(float(w[0][0, 0]))
"""


def test_data_parallel_steps_do_not_hang_in_their_all_reduce():
    """The fault: 2 CPU devices with XLA's default pools (2 threads on 2 cores) hang in the
    gradient all-reduce within a few hundred such steps on a loaded machine, and XLA aborts the
    process (SIGABRT) after 40 s. With configure's thread reservation they run to the end."""
    out = run_fresh(ALL_REDUCE)
    assert "Termination timeout" not in out.stderr


BIG_TEMP = f"""
import os, resource
import jax, jax.numpy as jnp
from dlkit import platform
platform.configure(1, features={TWO_CORES}, sync_dispatch=os.environ["SYNC"] == "on")
w = jnp.ones((4096, 8))
f = jax.jit(lambda x: jnp.sum(jnp.sin(x) @ w))  # sin(x): a 96 MiB temp, the dot's operand
x = jnp.ones((6144, 4096))
for _ in range(15):  # 2 warm-up calls, then the median of 13 calls' minor faults
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_big_temp_is_not_faulted_afresh_in_each_dispatch():
    """keep-arena reaches the main thread's arena only; XLA's dispatch thread has its own, whose
    heap glibc caps at 64 MiB, so a bigger temp was mmapped and page-faulted every call until
    configure made one-device dispatches run on the caller's thread (the control shows it).
    Reuse is glibc's best effort: now and then a call still faults the whole temp (beside 3 CPU
    hogs 10 of 260 calls in 20 processes, at most 3 of 13 in one; once 3 of 5 in a row), so the
    median of 13 calls judges it."""
    pages = (96 << 20) // resource.getpagesize()

    def faults(**env) -> float:  # a call's minor faults, median of 13 after 2 warm-up calls
        return statistics.median(map(int, run_fresh(BIG_TEMP, **env).stdout.split()[-13:]))

    assert faults(SYNC="off") > pages / 2  # the premise: dispatched on XLA's thread it faults
    assert faults(SYNC="on") < pages / 10
    # a user's own JAX_CPU_ENABLE_ASYNC_DISPATCH is kept, as OMP_WAIT_POLICY is
    assert faults(SYNC="on", JAX_CPU_ENABLE_ASYNC_DISPATCH="true") > pages / 2
