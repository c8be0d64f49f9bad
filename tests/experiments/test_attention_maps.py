"""experiments/attention_maps.py: weights per layer, index checks (the binary itself runs in
test_transformer_lm.py on a trained workdir)."""

import importlib.util
import pathlib

import jax.numpy as jnp
import matplotlib.image
import pytest
from absl import flags

import dlkit
from dlkit.nn.transformer import attention_weights

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_file(path):
    """Imports a script or config by path (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    before = set(flags.FLAGS)
    spec.loader.exec_module(module)
    for name in set(flags.FLAGS) - before:  # another binary may define the same flag names
        delattr(flags.FLAGS, name)
    return module


def test_weights_render_and_index_errors(tmp_path):
    attention_maps = load_file(ROOT / "experiments" / "attention_maps.py")
    c = load_file(ROOT / "experiments" / "configs" / "transformer_lm_shakespeare.py").get_config()
    c.model.update(embed_dim=16, num_layers=2, num_heads=2, mlp_dim=32)
    model, variables, tok = attention_maps.load(None, c, "abcab")
    ws = attention_weights(model, variables, jnp.asarray(tok.encode("abcab"))[None])
    assert [w.shape for w in ws] == [(1, 2, 5, 5)] * 2
    weights = [w[0] for w in ws]
    attention_maps.render(weights, list("abcab"), [1, 0], [1], tmp_path / "m.png")
    image = matplotlib.image.imread(tmp_path / "m.png")
    assert image.shape[0] > 1.5 * image.shape[1]  # two rows (layers) of one panel (head)
    assert attention_maps.pick(["-1", "0"], 2, "layers") == [1, 0]
    with pytest.raises(dlkit.ConfigError, match="out of range: the model has 2 layers"):
        attention_maps.pick(["2"], 2, "layers")
    with pytest.raises(dlkit.ConfigError, match="--workdir"):
        attention_maps.load(None, None, "x")
