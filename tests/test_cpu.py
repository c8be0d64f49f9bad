"""dlkit.cpu: the pure policy, feature detection, and configure() applying it once."""

import os

import pytest

from dlkit import cpu


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(cpu, "_APPLIED", None)


def test_detect_reads_this_machine():
    f = cpu.CpuFeatures.detect()
    assert f.cores >= 1
    assert f.flags <= frozenset(cpu.ISA_FLAGS)


def test_choose_is_pure_and_describes_itself():
    f = cpu.CpuFeatures("GenuineIntel", "Xeon", frozenset({"avx512f", "amx_bf16"}), 2)
    assert cpu.choose(f) == cpu.choose(f)
    text = cpu.choose(f).describe()
    assert "Xeon" in text and "amx_bf16" in text and "2 cores" in text


def test_configure_applies_once_and_prints_once(capsys, monkeypatch):
    monkeypatch.setattr(cpu, "_APPLIED", None)  # as in a fresh process (make_steps may have run)
    first = cpu.configure()
    second = cpu.configure()
    assert first is second
    out = capsys.readouterr()
    assert out.out.count("dlkit CPU policy") == 1 and "dlkit CPU policy" not in out.err


def test_off_switch(monkeypatch):
    monkeypatch.setenv("DLKIT_CPU_POLICY", "off")
    policy = cpu.configure(verbose=False)
    assert not policy.keep_malloc_arena and not policy.xla_flags


def test_xla_flags_skipped_once_jax_started(monkeypatch):
    import jax

    jax.devices()  # the backend is up: flags can no longer take effect
    monkeypatch.setenv("XLA_FLAGS", "")
    policy = cpu.CpuPolicy(cpu.CpuFeatures(), xla_flags=("--xla_cpu_enable_fast_min_max=false",))
    applied = cpu.configure(policy, verbose=False)
    assert applied.xla_flags == () and "not applied" in applied.describe()
    assert os.environ["XLA_FLAGS"] == ""


def test_a_device_per_physical_core():
    f = cpu.CpuFeatures("AuthenticAMD", "EPYC", frozenset({"avx2"}), cores=4, physical_cores=2)
    assert cpu.choose(f).devices == 2  # SMT siblings share a core: one device per core
    assert cpu.choose(cpu.CpuFeatures(cores=1)).devices == 1
    assert cpu.choose(cpu.CpuFeatures(cores=64, physical_cores=64)).devices == cpu.MAX_DEVICES


def test_devices_split_only_when_asked():
    policy = cpu.CpuPolicy(cpu.CpuFeatures(cores=2), devices=2)
    assert cpu.configure(policy, verbose=False).devices == 1  # make_steps: one device


SPLIT = """
import os
import jax
from dlkit import cpu
policy = cpu.CpuPolicy(cpu.CpuFeatures(cores=2, physical_cores=2), devices=2)
applied = cpu.configure(policy, split_devices=True)
n = jax.device_count()
eigen = sum(open(f"/proc/self/task/{t}/comm").read().startswith("tf_XLAEigen")
            for t in os.listdir("/proc/self/task"))
print(applied.devices, n, eigen >= 2 * n)
"""


@pytest.mark.parametrize(
    "xla_flags, want",
    [("", "2 2 True"), ("--xla_force_host_platform_device_count=3", "1 3 True")],
)
def test_configure_splits_the_cpu_before_jax_starts(xla_flags, want):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "DLKIT_NPROC")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
    out = subprocess.run([sys.executable, "-c", SPLIT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == want
    assert ("devices not split" in out.stdout) == bool(xla_flags)


def test_collective_threads_two_per_device():
    assert cpu.collective_threads(1, 2) == 2
    assert cpu.collective_threads(2, 2) == 4  # 2 and 3 threads hang (BUILD_NOTES)
    assert cpu.collective_threads(4, 2) == 8
    assert cpu.collective_threads(2, 16) == 16


@pytest.mark.parametrize(
    "user, want_nproc, warns",
    [(None, "4", False), ("8", "8", False), ("2", "2", True), ("x", "x", True)],
)
def test_reserve_threads_sets_or_checks_nproc(monkeypatch, user, want_nproc, warns):
    monkeypatch.setattr(cpu, "_backend_started", lambda: False)
    monkeypatch.delenv("DLKIT_NPROC", raising=False)
    if user is None:
        monkeypatch.delenv("NPROC", raising=False)
    else:
        monkeypatch.setenv("NPROC", user)
    note = cpu.reserve_threads(2, cores=2)
    assert os.environ["NPROC"] == want_nproc
    assert (note is not None and "may hang" in note) == warns


def test_reserve_threads_raises_its_own_nproc_and_warns_late(monkeypatch):
    monkeypatch.setattr(cpu, "_backend_started", lambda: False)
    monkeypatch.setenv("NPROC", "4")
    monkeypatch.setenv("DLKIT_NPROC", "4")  # dlkit set it for 2 devices; now 3 are asked for
    assert cpu.reserve_threads(3, cores=2) is None and os.environ["NPROC"] == "6"
    monkeypatch.setattr(cpu, "_backend_started", lambda: True)
    assert "may hang" in cpu.reserve_threads(8, cores=2)
    assert os.environ["NPROC"] == "6"


ALL_REDUCE = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from dlkit import cpu
cpu.configure(cpu.CpuPolicy(cpu.CpuFeatures(cores=2, physical_cores=2), devices=2),
              split_devices=True, verbose=False)
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
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "DLKIT_NPROC", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", ALL_REDUCE], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Termination timeout" not in out.stderr
