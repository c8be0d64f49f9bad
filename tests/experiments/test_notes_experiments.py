"""Smoke runs of the notes' experiments (issue 9): each writes its PNGs and a table to --workdir."""

import json
import math
import pathlib
import re
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(name: str, workdir: pathlib.Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "experiments" / f"{name}.py"), f"--workdir={workdir}"]
    out = subprocess.run([*cmd, "--smoke", *flags], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def check_outputs(workdir: pathlib.Path, pngs: list[str], rows: int) -> str:
    for png in pngs:
        assert (workdir / png).read_bytes()[:8] == PNG_MAGIC, png
    table = (workdir / "table.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(body) == rows + 1, table  # header + rows
    cells = [c.strip().lower() for line in body for c in line.split("|")]
    assert "nan" not in cells and "inf" not in cells, table
    return table


def test_compare_optimizers(tmp_path):
    run("compare_optimizers", tmp_path)
    check_outputs(tmp_path, ["optimizers.png"], rows=6)
    res = json.loads((tmp_path / "results.json").read_text())
    curves = res["curves"]
    gd = curves["batch GD"]["loss"]
    assert gd[-1] < gd[0] and all(math.isfinite(v) for c in curves.values() for v in c["loss"])
    # Adam written from scratch follows optax's Adam step for step.
    np.testing.assert_allclose(
        curves["Adam (from scratch)"]["loss"], curves["Adam"]["loss"], rtol=1e-5
    )
    batch = {r["optimizer"]: r["batch size"] for r in res["rows"]}
    assert batch["SGD (batch 1)"] == 1 and batch["batch GD"] > 1000


def test_lr_sweep_reports_divergence(tmp_path):
    out = run("lr_sweep", tmp_path)
    check_outputs(tmp_path, ["lr_sweep.png"], rows=2)
    res = {r["learning rate"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert not res[0.1]["diverged"] and res[100.0]["diverged"]
    assert res[100.0]["verdict"].startswith("diverged at step")
    assert re.search(r"lr 100 +diverged at step \d+", out.stdout), out.stdout
    assert all(math.isfinite(v) for r in res.values() for v in r["curve"]["loss"])


def test_activations_sigmoid_gradients_vanish(tmp_path):
    run("activations", tmp_path)
    check_outputs(tmp_path, ["grad_norms.png", "training.png"], rows=2)
    rows = {r["run"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    key = "norm dW_1 / norm dW_L at init"
    sig, relu = rows["sigmoid momentum lr 0.003"][key], rows["relu momentum lr 0.003"][key]
    assert sig < 0.01 * relu, (sig, relu)  # 6 sigmoid layers: sigma' <= 1/4 each
    assert 0.0 <= rows["relu momentum lr 0.003"]["dead ReLU at end"] <= 1.0


def test_linear_templates_digits(tmp_path):
    run("linear_templates", tmp_path, "--dataset=digits")
    check_outputs(tmp_path, ["templates.png"], rows=11)
    assert np.load(tmp_path / "templates.npy").shape == (10, 8, 8)
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] > 0.5


def test_linear_templates_mnist_shared_split(tmp_path, shared_data):
    run("linear_templates", tmp_path, f"--data_dir={shared_data / 'mnist'}")
    check_outputs(tmp_path, ["templates.png"], rows=11)
    assert np.load(tmp_path / "templates.npy").shape == (10, 28, 28)


def test_roofline(tmp_path):
    run("roofline", tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    rows = res["rows"]
    check_outputs(tmp_path, ["roofline.png"], rows=len(rows))
    assert {r["group"] for r in rows} == {"MLP", "CNN", "attention"}
    ridge = res["flops_per_sec"] / res["bytes_per_sec"]
    for r in rows:
        assert r["bound"] == ("memory" if r["FLOP/byte"] < ridge else "compute"), r
    hidden = next(r for r in rows if r["op"].startswith("hidden_0"))
    assert hidden["FLOPs"] == 2 * 16 * 784 * 128 + 16 * 128  # smoke batch 16
    ref, chunked = (r for r in rows if r["group"] == "attention")
    assert chunked["FLOP/byte"] > ref["FLOP/byte"]  # streaming k/v never writes the scores
