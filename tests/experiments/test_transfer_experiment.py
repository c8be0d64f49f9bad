"""experiments/transfer.py --smoke end to end: four runs, the accuracy table, the PNG, and a frozen
backbone that is bit-identical to the pre-trained one."""

import pathlib
import subprocess
import sys

import numpy as np

from dlkit.train import restore_latest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_smoke_table_plot_and_frozen_backbone(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "transfer.py"), "--smoke"]
    out = subprocess.run(
        [*cmd, f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "| step | frozen | finetune | scratch |" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [4, 8, 12]
    for row in rows:
        accs = [float(x) for x in row.split("|")[2:5]]
        assert all(0.0 <= a <= 1.0 for a in accs), row
    assert "conv_0" in text and "loaded" in text and "skipped" in text  # the init_from table
    png = tmp_path / "transfer.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pre = restore_latest(tmp_path / "pretrain", items=("state",))["state"]["params"]
    frozen = restore_latest(tmp_path / "frozen_s0", items=("state",))["state"]["params"]
    tuned = restore_latest(tmp_path / "finetune_s0", items=("state",))["state"]["params"]
    for layer in ("conv_0", "conv_1"):
        np.testing.assert_array_equal(frozen[layer]["kernel"], pre[layer]["kernel"])
        assert not np.array_equal(tuned[layer]["kernel"], pre[layer]["kernel"])
    assert frozen["head"]["kernel"].shape[-1] == 5 and pre["head"]["kernel"].shape[-1] == 5
    assert not np.array_equal(frozen["dense_0"]["kernel"], pre["dense_0"]["kernel"])


def test_text_smoke_word2vec_start_vs_random(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "transfer.py"), "--smoke", "--text"]
    out = subprocess.run(
        [*cmd, f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| step | word2vec | random |" in out.stdout
    assert "init_vectors" in out.stdout and (tmp_path / "transfer_text.png").is_file()
    w2v = np.load(tmp_path / "char_vectors" / "vectors.npz")
    start = restore_latest(tmp_path / "word2vec_s0", items=("state",))["state"]["params"]
    assert start["embed"]["embedding"].shape == w2v["vectors"].shape
