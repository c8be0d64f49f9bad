"""A test's script in a fresh Python process: jax fixes its CPU device count when it starts.

out = run_python([str(HERE), "mesh"], devices=2)   # fails the test unless it exits 0
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cpu_env(devices: int = 1, **extra) -> dict:
    """os.environ with JAX on the CPU, the repo and tests/ importable, `devices` CPU devices (2 XLA
    threads each: fewer can hang an all-reduce, see dlkit.platform) and `extra` on top."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if devices > 1:
        flag = f" --xla_force_host_platform_device_count={devices}"
        env.update(XLA_FLAGS=env.get("XLA_FLAGS", "") + flag, NPROC=str(2 * devices))
    env.update(extra)
    paths = [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return env


def run_python(
    args: list[str], devices: int = 1, timeout: int = 600, check: bool = True, **extra
) -> subprocess.CompletedProcess:
    """`python *args` under cpu_env(devices, **extra) from the repo root; with `check` the test
    fails (showing the output's tail) unless it exits 0."""
    out = subprocess.run(
        [sys.executable, *args],
        env=cpu_env(devices, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out
