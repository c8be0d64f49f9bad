"""experiments/transfer.py --weights: frozen / fine-tune / scratch from a torchvision-layout
ResNet-18 file (random weights, written by experiments/random_resnet_weights.py as safetensors;
.pth files of the same layout: tests/convert/test_from_torch.py::test_pth_and_safetensors_files),
with ImageNet preprocessing; the frozen backbone keeps the file's weights bit for bit."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dlkit import convert
from dlkit.train import restore_latest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def weights_file(tmp_path) -> pathlib.Path:
    path = tmp_path / "resnet18.safetensors"
    cmd = [sys.executable, str(ROOT / "experiments" / "random_resnet_weights.py")]
    subprocess.run([*cmd, "--width=8", f"--out={path}"], check=True, timeout=300)
    return path


@pytest.mark.slow  # three ResNet-18 compiles: ~1.5 min of CPU on 2 cores
def test_transfer_from_a_torchvision_resnet18_file(tmp_path):
    weights = weights_file(tmp_path)
    cmd = [sys.executable, str(ROOT / "experiments" / "transfer.py"), "--smoke"]
    cmd += [f"--weights={weights}", "--width=8", f"--workdir={tmp_path / 'runs'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| step | frozen | finetune | scratch |" in out.stdout
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [4, 8, 12]
    assert "converted from the PyTorch resnet18 layout" in out.stdout
    assert "loaded=100 skipped=2" in out.stdout  # fc.weight/bias (1000 classes) -> new 5-way head
    want = convert.from_torch("resnet18", weights, width=8)
    frozen = restore_latest(tmp_path / "runs" / "frozen_s0", items=("state",))["state"]
    np.testing.assert_array_equal(
        frozen["params"]["conv_stem"]["kernel"], want["params"]["conv_stem"]["kernel"]
    )
    np.testing.assert_array_equal(
        frozen["model_state"]["batch_stats"]["stage_3_block_1"]["bn_1"]["var"],
        want["batch_stats"]["stage_3_block_1"]["bn_1"]["var"],
    )
    assert frozen["params"]["head"]["kernel"].shape == (64, 5)


def test_weights_file_needs_a_layout_name(tmp_path):
    from dlkit import ConfigError, train

    path = tmp_path / "w.safetensors"
    convert.save_safetensors({"x": np.zeros(2, np.float32)}, path)
    c = train.default_config()
    c.num_train_steps, c.progress_bar = 1, False
    c.init_from = str(path)
    with pytest.raises(ConfigError, match="set transfer.convert to its layout"):
        train.train_and_evaluate(c, str(tmp_path / "run"))
    c.convert = "mlp"
    with pytest.raises(ConfigError, match="the state_dict has 0 layers with weights"):
        train.train_and_evaluate(c, str(tmp_path / "run2"))
