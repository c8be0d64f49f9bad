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
import jax
from dlkit import cpu
policy = cpu.CpuPolicy(cpu.CpuFeatures(cores=2, physical_cores=2), devices=2)
applied = cpu.configure(policy, split_devices=True)
print(applied.devices, jax.device_count())
"""


@pytest.mark.parametrize(
    "xla_flags, want", [("", "2 2"), ("--xla_force_host_platform_device_count=3", "1 3")]
)
def test_configure_splits_the_cpu_before_jax_starts(xla_flags, want):
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    out = subprocess.run([sys.executable, "-c", SPLIT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == want
    assert ("devices not split" in out.stdout) == bool(xla_flags)
