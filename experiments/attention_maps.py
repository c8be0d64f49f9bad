"""Renders attention weights of chosen layers and heads as a PNG heat map, tokens on the axes.

  python experiments/attention_maps.py --workdir=workdirs/transformer_lm_shakespeare \
      --text="ROMEO: But soft" --layers=0,1 --heads=0,1,2,3 --out=attention.png

Without a trained --workdir, --config builds the config's model with random weights and a
character tokenizer of --text (to see the plumbing, not learned attention).
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config for a random-weight model.")
_TEXT = flags.DEFINE_string("text", "To be, or not to be", "Input text.")
_LAYERS = flags.DEFINE_list("layers", ["0"], "Layer indices (negative counts from the end).")
_HEADS = flags.DEFINE_list("heads", None, "Head indices (default: all).")
_OUT = flags.DEFINE_string("out", "attention.png", "Output PNG path.")

_SHOW = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}


def load(workdir, config, text):
    """(model, variables, tokenizer): trained from workdir, or random from config."""
    import jax

    from dlkit import models
    from dlkit.data.tokenizers import build_tokenizer
    from dlkit.errors import ConfigError
    from dlkit.train.load import load_language_model as load_from_workdir

    if workdir:
        return load_from_workdir(workdir)
    if config is None:
        raise ConfigError("give --workdir (a trained model) or --config (random weights)")
    tok = build_tokenizer(text, "char")
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    kwargs["num_classes"] = tok.vocab_size
    model = models.get(config.model.name, **kwargs)
    ids = jax.numpy.asarray(tok.encode(text))[None]
    return model, model.init(jax.random.key(config.get("seed", 0)), ids), tok


def pick(indices, n, what):
    """Parses index strings, allowing negatives; errors name the valid range."""
    from dlkit.errors import ConfigError

    try:
        out = [int(i) for i in indices]
    except ValueError as e:
        raise ConfigError(f"--{what} must be integers, got {indices}") from e
    bad = [i for i in out if not -n <= i < n]
    if bad:
        raise ConfigError(f"--{what} {bad} out of range: the model has {n} {what}")
    return [i % n for i in out]


def render(weights, tokens, layers, heads, out):
    """weights: list of (H, T, T) per layer; saves a len(layers) x len(heads) grid of heat maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_SHOW.get(t, t) for t in tokens]
    size = max(2.5, 0.22 * len(tokens))
    fig, axes = plt.subplots(
        len(layers), len(heads), figsize=(size * len(heads), size * len(layers)), squeeze=False
    )
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(weights[layer][head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=90)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel("key")
            ax.set_ylabel("query")
    fig.tight_layout()
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    import jax.numpy as jnp
    import numpy as np

    from dlkit import cli
    from dlkit.errors import ConfigError
    from dlkit.nn.transformer import attention_weights

    model, variables, tok = load(_WORKDIR.value, cli.config_value(_CONFIG), _TEXT.value)
    ids = tok.encode(_TEXT.value)
    if ids.size == 0:
        raise ConfigError("--text has no tokens")
    weights = [
        np.asarray(w[0]) for w in attention_weights(model, variables, jnp.asarray(ids)[None])
    ]
    if not weights:
        raise ConfigError(f"model {type(model).__name__} has no attention layers")
    layers = pick(_LAYERS.value, len(weights), "layers")
    heads = pick(_HEADS.value or range(weights[0].shape[0]), weights[0].shape[0], "heads")
    render(weights, [tok.vocab[i] for i in ids], layers, heads, _OUT.value)
    print(f"wrote {_OUT.value}: layers {layers} x heads {heads}, {len(ids)} tokens")


if __name__ == "__main__":
    from dlkit import cli

    cli.run(main)
