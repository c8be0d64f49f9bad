"""Every benchmark script runs: each one's tiny mode in a subprocess (seconds, CPU). The scripts'
figures are not checked here (they are measurements); that they run, print and write is.
benchmarks/attention.py and gpu_check.sh: tests/kernels/test_flash_integration.py (--smoke)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not TORCH, reason="PyTorch is not installed (.ci/run_torch)")


def run(script: str, *flags: str, cwd=ROOT) -> str:
    """The script's stdout; fails with its last output when it exits non-zero."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *flags]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def written(folder: pathlib.Path, kind: str) -> dict:
    (path,) = folder.glob(f"{kind}-*.json")
    return json.loads(path.read_text())


@needs_torch
def test_cpu_suite(tmp_path):
    out = run("cpu_suite.py", "--smoke", f"--out={tmp_path}")
    assert "| lenet5 |" in out
    (family,) = written(tmp_path, "cpu_suite")["families"]
    assert family["family"] == "lenet5" and family["batch_size"] == 8
    assert set(family["ms_per_step"]) == {"dlkit", "torch_eager"} and not family["errors"]
    assert family["peer"] == "process" and family["ms_per_step"]["torch_eager"] > 0
    out = run("cpu_suite.py", "--smoke", "--layers=lenet5", f"--out={tmp_path}")
    assert "| (8, 14, 14, 6) | (5, 5, 6, 16) | 1 | 1 |" in out, out[-2000:]
    assert "| avg | (8, 10, 10, 16) | (2, 2) | (2, 2) | 1 | - |" in out, out[-2000:]
    layers = written(tmp_path, "cpu_layers")
    assert layers["layers"] and [p["kind"] for p in layers["pool_layers"]] == ["avg", "avg"]
    out = run("cpu_suite.py", "--smoke", "--layers=transformer_lm", f"--out={tmp_path / 'tlm'}")
    assert "| (8, 128, 4, 32) | 4 | True | 4 |" in out, out[-2000:]


def test_cpu_suite_profile(tmp_path):  # runs without torch too
    out = run("cpu_suite.py", "--smoke", "--profile", "--families=mlp_digits", f"--out={tmp_path}")
    assert "mlp_digits:" in out and "GFLOP/s" in out
    (family,) = written(tmp_path, "cpu_profile")["families"]
    assert family["gflop_per_step"] > 0 and family["top_ops"]


def test_time_to_quality(tmp_path):
    out = run("time_to_quality.py", "--smoke", f"--out={tmp_path}", f"--workdir={tmp_path}")
    assert "| mlp_digits |" in out and "at step 20" in out
    assert written(tmp_path, "time_to_quality")["runs"][0]["run"] == "mlp_digits"


@pytest.mark.slow
def test_faults_nan_trial(tmp_path):
    """The NaN trial (its own training child) survives: exit 1 naming the step, rerun equal."""
    out = run("faults.py", "--smoke", "--kinds=nan", "--trials=1", cwd=tmp_path)
    assert "faults survived: 1/1; steps lost: 0; divergences" in out
    assert "uninterrupted result: 0;" in out


def test_attention_memory():
    out = run("attention_memory.py", "--smoke", "--no_rss")
    assert "| 64 |" in out and "| 128 |" in out


def test_pmap_vs_sharded():
    out = run("pmap_vs_sharded.py", "--devices=2", "--batch=4", "--rounds=1", "--model=mlp")
    assert "max |sharded - pmap|" in out and "pmap / sharded time" in out


def test_suite_table(tmp_path):
    record = {"families": [{"family": "cnn", "ms_per_step": {"dlkit": 10.0, "torch_eager": 12.0}}]}
    paths = []
    for i, ms in enumerate((10.0, 8.0, 12.0)):
        record["families"][0]["ms_per_step"]["dlkit"] = ms
        paths.append(tmp_path / f"cpu_suite-{i}.json")
        paths[-1].write_text(json.dumps(record))
    out = run("suite_table.py", *map(str, paths))
    assert "| cnn | 10.00 (8.00-12.00) | 1.20 (1.00-1.50) | - |" in out, out
    for tree, record in zip(("base", "this"), paths[:2], strict=True):  # dlkit 10 ms, then 8
        (tmp_path / "ab" / tree).mkdir(parents=True)
        (tmp_path / "ab" / tree / "cpu_suite-x.json").write_text(record.read_text())
    out = run("suite_table.py", "--ab", str(tmp_path / "ab"), "abc123")
    assert "cnn             dlkit        base [10.0]  this [8.0]  this/base 0.800" in out, out


@pytest.mark.parametrize(
    "make, expect",
    [
        ("missing", "cannot read"),
        ("foreign", "not a cpu_suite.py record"),
        ("help", "suite_table"),
        ("empty_ab", "no records in"),
        ("bare_ab", "give an ab_suite.sh folder"),
    ],
)
def test_suite_table_bad_input_is_one_line(tmp_path, make, expect):
    path = tmp_path / "r.json"
    if make == "foreign":
        path.write_text(json.dumps({"rows": []}))
    args = {
        "missing": [str(path)],
        "foreign": [str(path)],
        "help": ["--help"],
        "empty_ab": ["--ab", str(tmp_path)],
        "bare_ab": ["--ab"],
    }[make]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "suite_table.py"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert expect in done.stderr, done.stderr


@needs_torch
def test_ab_suite(tmp_path):
    """Two trees alternating: this checkout's HEAD as the base (a temporary worktree) and this."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AB_OUT": str(tmp_path), "PYTHON": sys.executable}
    cmd = ["bash", str(ROOT / "benchmarks" / "ab_suite.sh"), "HEAD", "1", "--smoke"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "lenet5          dlkit        base [" in done.stdout, done.stdout[-2000:]
    assert len(list(tmp_path.glob("*/cpu_suite-*.json"))) == 2
