"""A vision config trains through experiments/train.py (cnn_smoke: start-up, flags, checkpoint,
final line). The other vision smoke configs (alexnet, vgg, resnet) train in-process in
tests/experiments/test_configs_train.py: same train_and_evaluate, no jax start-up each."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cnn_smoke"])
def test_smoke_config_trains_through_the_binary(tmp_path, name):
    config = ROOT / "experiments" / "configs" / f"{name}.py"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "train.py"),
            f"--config={config}",
            f"--workdir={tmp_path}",
            "--config.num_train_steps=3",
            "--config.eval_batch_size=128",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    final = next(ln for ln in out.stdout.splitlines() if ln.startswith("final: "))
    fields = dict(kv.split("=") for kv in final.split()[1:])
    assert fields["step"] == "3"
    assert 0.0 <= float(fields["eval_accuracy"]) <= 1.0 and float(fields["train_loss"]) > 0
    assert (tmp_path / "checkpoints" / "3").is_dir()
