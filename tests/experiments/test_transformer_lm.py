"""transformer_lm end to end through the binaries: compare_lm.py trains the smoke config with the
shared trainer and prints its row, then sample.py and attention_maps.py read that workdir."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"


def run(script, *args):
    out = subprocess.run(
        [sys.executable, str(EXP / script), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "deprecated" not in out.stdout + out.stderr  # the binaries use today's config keys
    return out.stdout


def test_compare_then_sample_then_attention_maps(tmp_path):
    out = run(
        "compare_lm.py",
        "--configs=transformer_lm_smoke",
        "--budget_seconds=0.2",
        "--calibration_steps=2",
        "--calibration_rounds=1",
        f"--workdir={tmp_path}",
    )
    header, rule, row = out.strip().splitlines()[-3:]
    assert header.startswith("| config | model | params") and rule.startswith("|---")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["transformer_lm_smoke", "transformer_lm"]
    assert int(cells[4]) >= 1 and 0 < float(cells[6]) < 10  # steps, held-out loss (nats)
    work = tmp_path / "transformer_lm_smoke"
    text = run("sample.py", f"--workdir={work}", "--prompt=def ", "--num_chars=40", "--seed=1")
    assert text.startswith("def ") and len(text.rstrip("\n")) >= 40
    png = tmp_path / "maps.png"
    out = run("attention_maps.py", f"--workdir={work}", "--text=def f(x):", f"--out={png}")
    assert "layers [0] x heads [0, 1], 9 tokens" in out and png.stat().st_size > 1000
