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
