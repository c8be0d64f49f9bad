"""Static vs contextual report on a tiny random Transformer: the maths, the text and the plot."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from dlkit import models
from dlkit.data.tokenizers import build_tokenizer
from dlkit.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
SENTENCES = ["I will go.", "It is my will that we go.", "Against my will."]


def _experiment():
    path = ROOT / "experiments" / "static_vs_contextual.py"
    spec = importlib.util.spec_from_file_location("static_vs_contextual", path)
    module = importlib.util.module_from_spec(spec)
    before = set(flags.FLAGS)
    spec.loader.exec_module(module)
    for name in set(flags.FLAGS) - before:  # another binary may define the same flag names
        delattr(flags.FLAGS, name)
    return module


def _tiny_lm(tokenizer):
    model = models.get(
        "transformer_lm",
        num_classes=tokenizer.vocab_size,
        embed_dim=8,
        num_layers=1,
        num_heads=2,
        mlp_dim=32,
        max_len=32,
    )
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    return model, variables


def test_static_is_constant_contextual_varies(tmp_path):
    exp = _experiment()
    tok = build_tokenizer(" ".join(SENTENCES), "char", unk=False)
    model, variables = _tiny_lm(tok)
    rng = np.random.default_rng(0)
    words, vectors = ["i", "will", "go"], rng.normal(size=(3, 6)).astype(np.float32)
    result = exp.compare("Will", SENTENCES, words, vectors, model, variables, tok)

    static, ctx = np.asarray(result["static"]), np.asarray(result["contextual"])
    np.testing.assert_allclose(static, np.ones((3, 3)), atol=1e-6)  # same vector everywhere
    np.testing.assert_allclose(np.diag(ctx), 1.0, atol=1e-6)
    assert np.all(ctx[~np.eye(3, dtype=bool)] < 0.999)  # the word's vector depends on context
    assert result["static_mean"] == pytest.approx(1.0)
    assert len(result["per_layer_mean"]) == 2  # embeddings + 1 block
    assert result["per_layer_mean"][-1] == pytest.approx(result["contextual_mean"])

    # the contextual row is the probe's vector after the last character of "will"
    from dlkit.nn.transformer import contextual_embeddings

    ids = jnp.asarray(tok.encode(SENTENCES[0]))[None]  # the shortest: padded in the batch
    hidden = jax.jit(lambda v, x: contextual_embeddings(model, v, x, layer=1))(variables, ids)[0]
    direct = exp.contextual_vectors("will", SENTENCES, model, variables, tok)
    assert direct.shape == (2, 3, 8)  # (layers + 1, sentences, E)
    np.testing.assert_allclose(direct[1, 0], hidden[SENTENCES[0].index("will") + 3], rtol=1e-4)

    lines = exp.report_lines(result)
    assert lines[4].startswith("word2vec: cos(Will, Will) across contexts: [0,1] 1.000")
    assert any(line.startswith("transformer layer 1: mean ") for line in lines)
    exp.plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ConfigError, match="does not contain"):
        exp.compare("will", ["I will.", "no such word"], words, vectors, model, variables, tok)
    with pytest.raises(ConfigError, match="does not fit"):
        exp.compare("will", ["I will.", "zap will"], words, vectors, model, variables, tok)
    with pytest.raises(ConfigError, match="layer 2 out of range"):
        exp.compare("will", SENTENCES, words, vectors, model, variables, tok, layer=2)
    with pytest.raises(ConfigError, match="not in the word2vec vocabulary"):
        exp.compare("go", SENTENCES, ["i"], vectors[:1], model, variables, tok)
