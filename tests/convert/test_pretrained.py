"""Hugging Face GPT-2 folders in and out against transformers (random weights, built in-process;
nothing is downloaded). Skips without torch or transformers (pip install -e .[hf])."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
transformers = pytest.importorskip("transformers", reason="pip install transformers")

from tolerances import rtol_for  # noqa: E402

from dlkit import ConfigError, convert, models  # noqa: E402

SMALL = dict(vocab_size=50, n_positions=16, n_embd=64, n_layer=2, n_head=4)
E, L = SMALL["n_embd"], SMALL["n_layer"]
# logits: sums over the 4E-wide MLP of every layer, in another order than PyTorch's
RTOL = rtol_for(np.float32, n=4 * E * L)
TOKENS = np.random.default_rng(0).integers(0, SMALL["vocab_size"], size=(2, 16))


def gpt2(**config):
    """A random-weight GPT2LMHeadModel (eval mode)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**SMALL, **config)
    return transformers.GPT2LMHeadModel(cfg).eval()


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(TOKENS)).logits.numpy()


def assert_close(got, want):
    err = np.abs(np.asarray(got) - want).max()
    assert err <= RTOL * np.abs(want).max(), (err, np.abs(want).max())


CONFIGS = {
    "gpt2 defaults": {},
    "exact gelu, n_inner, untied": dict(
        activation_function="gelu", n_inner=80, tie_word_embeddings=False
    ),
    "relu, eps 1e-3, reorder_and_upcast_attn": dict(
        activation_function="relu", layer_norm_epsilon=1e-3, reorder_and_upcast_attn=True
    ),
}


@pytest.mark.parametrize("case", CONFIGS)
def test_folder_loads_in_one_call(case, tmp_path):
    """save_pretrained's folder -> load_pretrained(folder), no kwargs -> the same logits."""
    peer = gpt2(**CONFIGS[case])
    peer.save_pretrained(tmp_path)
    model, variables = convert.load_pretrained(tmp_path)
    assert_close(model.apply(variables, TOKENS.astype(np.int32)), torch_logits(peer))


def test_save_model_file_with_only_lm_head(tmp_path):
    """safetensors.torch.save_model keeps lm_head.weight and drops the shared wte."""
    from safetensors.torch import save_model

    peer = gpt2()
    peer.config.save_pretrained(tmp_path)
    save_model(peer, str(tmp_path / "model.safetensors"))
    keys = convert.read_state_dict(tmp_path / "model.safetensors")
    assert "lm_head.weight" in keys and "transformer.wte.weight" not in keys
    model, variables = convert.load_pretrained(tmp_path)
    assert_close(model.apply(variables, TOKENS.astype(np.int32)), torch_logits(peer))


@pytest.mark.parametrize("tied", [True, False])
def test_dlkit_lm_folder_read_by_transformers(tied, tmp_path):
    """dlkit transformer_lm -> save_pretrained -> GPT2LMHeadModel.from_pretrained: equal logits."""
    import jax

    kw = dict(num_classes=50, embed_dim=64, num_layers=2, num_heads=4, max_len=16)
    kw |= dict(tie_embeddings=tied, layer_norm_epsilon=1e-5, activation="gelu_exact")
    model = models.get("transformer_lm", **kw)
    variables = model.init(jax.random.key(0), TOKENS[:, :2].astype(np.int32))
    convert.save_pretrained(tmp_path, model, variables)
    peer = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert peer.config.tie_word_embeddings == tied
    assert_close(model.apply(variables, TOKENS.astype(np.int32)), torch_logits(peer))
    again, back = convert.load_pretrained(tmp_path)
    assert again == model.clone(dropout_rate=again.dropout_rate)
    jax.tree.map(np.testing.assert_array_equal, back, variables)


def write_config(folder, **config):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(model_type="llama"), r"model_type 'llama' cannot be represented .*rotary"),
        (dict(model_type="gpt2", scale_attn_by_inverse_layer_idx=True), "is not supported"),
        (dict(model_type="gpt2", scale_attn_weights=False), "scale_attn_weights=False"),
        (dict(model_type="gpt2", activation_function="quick_gelu"), "'quick_gelu' has no dlkit"),
        (
            dict(model_type="gpt2", architectures=["GPT2ForSequenceClassification"]),
            "architecture GPT2ForSequenceClassification",
        ),
    ],
)
def test_unsupported_configs_are_one_line_errors(config, match, tmp_path):
    folder = write_config(tmp_path / "m", **config)
    with pytest.raises(ConfigError, match=match) as e:
        convert.load_pretrained(folder)
    assert "\n" not in str(e.value)


def test_kwargs_must_agree_with_the_file(tmp_path):
    """The issue's silent wrong settings are refused when the file's config says otherwise."""
    peer = gpt2()
    peer.save_pretrained(tmp_path)
    for wrong in (dict(layer_norm_epsilon=1e-6), dict(activation="gelu_exact"), dict(max_len=8)):
        with pytest.raises(ConfigError, match=r"contradicts the file's config") as e:
            convert.load_pretrained(tmp_path, **wrong)
        assert "\n" not in str(e.value)
    model, variables = convert.load_pretrained(
        tmp_path, num_layers=2, mlp_dim=4 * E, num_kv_heads=4, dropout_rate=0.0
    )
    assert model.dropout_rate == 0.0
    assert_close(model.apply(variables, TOKENS.astype(np.int32)), torch_logits(peer))
