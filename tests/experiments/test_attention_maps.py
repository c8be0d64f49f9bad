"""experiments/attention_maps.py: a PNG grid of attention heat maps; bad input fails cleanly."""

import pathlib
import subprocess
import sys

import matplotlib.image
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import attention_maps  # noqa: E402

import dlkit  # noqa: E402

TINY = [
    f"--config={ROOT / 'experiments' / 'configs' / 'transformer_lm_shakespeare.py'}",
    "--config.model.embed_dim=16",
    "--config.model.num_layers=2",
    "--config.model.num_heads=2",
    "--config.model.mlp_dim=32",
]


def test_renders_png_with_one_panel_per_layer_and_head(tmp_path):
    out = tmp_path / "maps" / "attn.png"
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "attention_maps.py"),
        *TINY,
        "--text=to be or not",
        "--layers=0,-1",
        "--heads=1",
        f"--out={out}",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "layers [0, 1] x heads [1], 12 tokens" in run.stdout
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 1.5 * image.shape[1]  # two rows of one panel each


def test_weights_and_index_errors():
    import importlib.util

    import jax.numpy as jnp

    from dlkit.nn.transformer import attention_weights

    path = ROOT / "experiments" / "configs" / "transformer_lm_shakespeare.py"
    spec = importlib.util.spec_from_file_location("transformer_lm_shakespeare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.model.update(embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32)
    model, variables, tok = attention_maps.load(None, c, "abcab")
    ws = attention_weights(model, variables, jnp.asarray(tok.encode("abcab"))[None])
    assert [w.shape for w in ws] == [(1, 2, 5, 5)] * 2
    assert attention_maps.pick(["-1", "0"], 2, "layers") == [1, 0]
    with pytest.raises(dlkit.ConfigError, match="out of range: the model has 2 layers"):
        attention_maps.pick(["2"], 2, "layers")
    with pytest.raises(dlkit.ConfigError, match="--workdir"):
        attention_maps.load(None, None, "x")
