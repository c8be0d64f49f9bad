"""Model folders in and out: Hugging Face GPT-2 folders and nanoGPT ckpt.pt <-> transformer_lm.

`load_pretrained(path)` reads every setting that changes the numbers from the file's config and
refuses, in one line, a model or setting transformer_lm cannot represent; `save_pretrained` writes
a folder that `transformers.GPT2LMHeadModel.from_pretrained` reads.
"""

import dataclasses
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file

from dlkit import models
from dlkit.convert.io import TORCH_SUFFIXES, _torch_load, read_state_dict
from dlkit.convert.pytorch import from_torch, to_torch
from dlkit.errors import ConfigError
from dlkit.nn.transformer import TransformerLM

NAME = "transformer_lm"
# GPT2Config's defaults: save_pretrained may leave out a value equal to PretrainedConfig's default.
GPT2_DEFAULTS = dict(
    vocab_size=50257,
    n_positions=1024,
    n_embd=768,
    n_layer=12,
    n_head=12,
    n_inner=None,
    activation_function="gelu_new",
    resid_pdrop=0.1,
    layer_norm_epsilon=1e-5,
    scale_attn_weights=True,
    scale_attn_by_inverse_layer_idx=False,
    reorder_and_upcast_attn=False,
    add_cross_attention=False,
    tie_word_embeddings=True,
)
# Hugging Face activation_function -> dlkit activation (gelu_new / gelu_fast /
# gelu_pytorch_tanh are the tanh approximation, "gelu" is the exact erf form).
ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_fast": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "linear": "identity",
}
TO_HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "tanh": "tanh"}
TO_HF_ACTIVATION |= {"sigmoid": "sigmoid", "identity": "linear"}
_WHY_NOT = {  # model_type -> what transformer_lm lacks
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"),
        "rotary positions, RMSNorm, a gated MLP, grouped key/value heads",
    ),
    **dict.fromkeys(("gpt_neox", "gptj", "phi", "falcon"), "rotary positions"),
    "gpt_neo": "local-attention layers",
    "gpt_bigcode": "multi-query attention",
    "opt": "OPT's offset positions and post-LN variants",
    **dict.fromkeys(("bert", "roberta", "distilbert", "t5", "bart"), "not a decoder-only LM"),
}
_GPT2_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
FREE = ("dropout_rate", "implementation", "dtype")  # kwargs that do not change eval outputs
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_settings(config: dict, where) -> dict:
    """transformer_lm kwargs for a Hugging Face GPT-2 config.json (ConfigError if unsupported)."""
    mtype = config.get("model_type")
    if mtype != "gpt2":
        why = _WHY_NOT.get(mtype, "not a GPT-2-family model")
        raise ConfigError(
            f"{where}: model_type {mtype!r} cannot be represented by dlkit's transformer_lm "
            f"({why}); load_pretrained reads Hugging Face gpt2 folders and nanoGPT ckpt.pt"
        )
    arch = [a for a in config.get("architectures") or [] if a not in _GPT2_ARCHITECTURES]
    if arch:
        raise ConfigError(
            f"{where}: architecture {arch[0]} has heads dlkit's transformer_lm lacks; save the "
            f"language model ({' or '.join(_GPT2_ARCHITECTURES)})"
        )
    c = {k: config.get(k, v) for k, v in GPT2_DEFAULTS.items()}
    refuse = {
        "scale_attn_weights": not c["scale_attn_weights"],
        "scale_attn_by_inverse_layer_idx": c["scale_attn_by_inverse_layer_idx"],
        "add_cross_attention": c["add_cross_attention"],
    }
    for key, bad in refuse.items():
        if bad:
            raise ConfigError(
                f"{where}: {key}={c[key]} is not supported by dlkit's transformer_lm (it scales "
                "attention scores by 1/sqrt(head_dim) in every layer and has no cross-attention)"
            )
    act = c["activation_function"]
    if act not in ACTIVATIONS:
        raise ConfigError(
            f"{where}: activation_function {act!r} has no dlkit activation; supported: "
            f"{', '.join(ACTIVATIONS)}"
        )
    return dict(
        num_classes=c["vocab_size"],
        embed_dim=c["n_embd"],
        num_layers=c["n_layer"],
        num_heads=c["n_head"],
        num_kv_heads=None,
        mlp_dim=c["n_inner"],
        max_len=c["n_positions"],
        positional="learned",
        tie_embeddings=bool(c["tie_word_embeddings"]),
        activation=ACTIVATIONS[act],
        layer_norm_epsilon=float(c["layer_norm_epsilon"]),
        dropout_rate=float(c["resid_pdrop"]),
    )


def nanogpt_settings(model_args: dict, where) -> dict:
    """transformer_lm kwargs for nanoGPT's model_args (exact GELU, LayerNorm eps 1e-5, tied)."""
    need = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    missing = [k for k in need if k not in model_args]
    if missing:
        raise ConfigError(f"{where}: model_args lacks {', '.join(missing)} (not a nanoGPT ckpt)")
    return dict(
        num_classes=int(model_args["vocab_size"]),
        embed_dim=int(model_args["n_embd"]),
        num_layers=int(model_args["n_layer"]),
        num_heads=int(model_args["n_head"]),
        num_kv_heads=None,
        mlp_dim=None,
        max_len=int(model_args["block_size"]),
        positional="learned",
        tie_embeddings=True,
        activation="gelu_exact",
        layer_norm_epsilon=1e-5,
        dropout_rate=float(model_args.get("dropout", 0.0)),
    )


def _effective(kw: dict, key: str):
    """A setting's value as the model uses it (mlp_dim None = 4 E; num_kv_heads None = heads)."""
    value = kw.get(key)
    if key == "mlp_dim" and value is None:
        return 4 * kw["embed_dim"]
    if key == "num_kv_heads" and value is None:
        return kw["num_heads"]
    return value


def merge_settings(derived: dict, given: dict, where) -> dict:
    """The file's settings, with `given` kwargs that agree (or do not change outputs: FREE)."""
    out = dict(derived)
    for key, value in given.items():
        if key in FREE or key not in derived:
            out[key] = value
            continue
        want = _effective(derived, key)
        if _effective({**derived, key: value}, key) != want:
            raise ConfigError(
                f"{where}: {key}={value!r} contradicts the file's config, which means "
                f"{key}={want!r}; leave {key} out"
            )
    return out


def _folder_weights(folder: pathlib.Path) -> dict:
    """{key: numpy} of a Hugging Face folder: model.safetensors, sharded or pytorch_model.bin."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state_dict(folder / name)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
            sd = {}
            for shard in shards:
                sd.update(read_state_dict(folder / shard))
            return sd
    raise ConfigError(
        f"{folder} has config.json but no model.safetensors or pytorch_model.bin (nor a sharded "
        "index); save the model with save_pretrained"
    )


def _read(path: pathlib.Path) -> tuple[dict, dict]:
    """(settings, state_dict) of a Hugging Face folder (or its config.json) or a nanoGPT ckpt."""
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ConfigError(
                f"{path} has no config.json: not a Hugging Face model folder; for a bare weights "
                f"file use from_torch({NAME!r}, file, **settings)"
            )
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config_file} is not valid JSON: {e}") from None
        settings = gpt2_settings(config, config_file)
        return settings, _folder_weights(path)
    if path.is_file() and path.suffix.lower() in TORCH_SUFFIXES:
        raw = _torch_load(path)
        if not (isinstance(raw, dict) and isinstance(raw.get("model_args"), dict)):
            raise ConfigError(
                f"{path} has no model_args (not a nanoGPT ckpt.pt); for a bare state_dict use "
                f"from_torch({NAME!r}, file, **settings) with the settings in docs/API.md"
            )
        return nanogpt_settings(raw["model_args"], path), read_state_dict(raw["model"])
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    raise ConfigError(
        f"{path}: load_pretrained reads a Hugging Face folder (config.json + model.safetensors) "
        f"or a nanoGPT ckpt.pt; for a bare weights file use from_torch({NAME!r}, file, ...)"
    )


def load_pretrained(path, **model_kwargs):
    """A Hugging Face GPT-2 folder or nanoGPT ckpt.pt -> (model, variables) for transformer_lm,
    every setting from the file's config; kwargs may repeat them, or set dropout_rate,
    implementation, dtype."""
    path = pathlib.Path(path).expanduser()
    settings, sd = _read(path)
    kwargs = merge_settings(settings, model_kwargs, path)
    variables = from_torch(NAME, sd, **kwargs)
    return models.get(NAME, **kwargs), variables


def _settings_of(model) -> dict:
    fields = (f.name for f in dataclasses.fields(model) if f.name not in ("parent", "name"))
    return {k: getattr(model, k) for k in fields}


def save_pretrained(path, model, variables) -> None:
    """Writes a transformer_lm as a Hugging Face GPT-2 folder (config.json + model.safetensors)
    that transformers.GPT2LMHeadModel.from_pretrained reads with the same logits."""
    if not isinstance(model, TransformerLM):
        raise ConfigError(
            f"save_pretrained writes transformer_lm models as GPT-2 folders; got "
            f"{type(model).__name__}; use to_torch for the other models"
        )
    kw = _settings_of(model)
    problems = {
        "positional": kw["positional"] != "learned",
        "num_kv_heads": kw["num_kv_heads"] not in (None, kw["num_heads"]),
        "activation": kw["activation"] not in TO_HF_ACTIVATION,
    }
    for key, bad in problems.items():
        if bad:
            raise ConfigError(
                f"save_pretrained: {key}={kw[key]!r} has no GPT-2 equivalent (GPT-2 has learned "
                "positions, one key/value head per query head, activations "
                f"{', '.join(TO_HF_ACTIVATION)})"
            )
    sd = to_torch(NAME, variables, **kw)
    if kw["tie_embeddings"]:
        sd.pop("lm_head.weight", None)  # transformers ties it to wte when loading
    elif np.any(sd.pop("lm_head.bias", 0.0)):
        raise ConfigError(
            "save_pretrained: head/bias is nonzero but GPT-2's lm_head has no bias; fine-tune "
            "with tie_embeddings=True or a zero head bias"
        )
    for key in sd:
        if key.endswith(_CONV1D):
            sd[key] = sd[key].T  # nn.Linear (out, in) -> Conv1D (in, out)
    config = dict(
        model_type="gpt2",
        architectures=["GPT2LMHeadModel"],
        vocab_size=kw["num_classes"],
        n_positions=kw["max_len"],
        n_ctx=kw["max_len"],
        n_embd=kw["embed_dim"],
        n_layer=kw["num_layers"],
        n_head=kw["num_heads"],
        n_inner=kw["mlp_dim"],
        activation_function=TO_HF_ACTIVATION[kw["activation"]],
        layer_norm_epsilon=kw["layer_norm_epsilon"],
        tie_word_embeddings=bool(kw["tie_embeddings"]),
        resid_pdrop=kw["dropout_rate"],
        embd_pdrop=kw["dropout_rate"],
        attn_pdrop=kw["dropout_rate"],
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
    )
    out = pathlib.Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
