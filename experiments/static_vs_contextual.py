"""Static versus contextual vectors: one word in several sentences, word2vec vs a Transformer.

  python experiments/word2vec.py --corpus=tiny_shakespeare --workdir=workdirs/w2v_shakespeare
  python experiments/train.py --config=experiments/configs/transformer_lm_shakespeare.py \
      --workdir=workdirs/transformer_lm_shakespeare
  python experiments/static_vs_contextual.py --vectors=workdirs/w2v_shakespeare \
      --lm_workdir=workdirs/transformer_lm_shakespeare --word=will

Prints the cosine similarity of the word to itself across contexts for both models and writes
static_vs_contextual.png (heat maps and the per-layer profile), .txt and .json to --out.
"""

import json
import pathlib
import re

import numpy as np
from absl import app, flags, logging

_DEFAULT_SENTENCES = (
    "I will go with you to the king.|It is the king's will that you depart.|"
    "Thou hast done this against my will.|We will not fight today, my lord."
)
_VECTORS = flags.DEFINE_string("vectors", "workdirs/w2v_shakespeare", "word2vec workdir or .npz.")
_LM = flags.DEFINE_string(
    "lm_workdir", "workdirs/transformer_lm_shakespeare", "Workdir of a trained transformer_lm."
)
_WORD = flags.DEFINE_string("word", "will", "The word compared across contexts.")
_SENTENCES = flags.DEFINE_string("sentences", _DEFAULT_SENTENCES, "Contexts, separated by '|'.")
_LAYER = flags.DEFINE_integer("layer", -1, "Transformer layer for the heat map (-1 = last).")
_POOL = flags.DEFINE_enum("pool", "last", ["last", "mean"], "Char model: word = last or mean char.")
_OUT = flags.DEFINE_string(
    "out", None, "Output folder (default <lm_workdir>/static_vs_contextual)."
)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """S_ij = cos(x_i, x_j) for rows of (N, D) -> (N, N)."""
    from dlkit.ops.word2vec import normalize_rows

    unit = normalize_rows(np.asarray(vectors, np.float64))
    return unit @ unit.T


def static_vectors(word: str, sentences, words, vectors) -> np.ndarray:
    """The word's word2vec row for each sentence (the look-up ignores the sentence) -> (N, D)."""
    from dlkit.errors import ConfigError

    index = {w: i for i, w in enumerate(words)}
    if word.lower() not in index:
        raise ConfigError(f"{word!r} is not in the word2vec vocabulary; pick another --word")
    return np.stack([vectors[index[word.lower()]] for _ in sentences])


def _word_position(word: str, sentence: str, tokenizer, pool: str):
    """Token index (or char span) of the word's first occurrence in the sentence."""
    from dlkit.errors import ConfigError

    if tokenizer.kind == "char":
        for m in re.finditer(r"[A-Za-z0-9_']+", sentence):
            if m.group().lower() == word.lower():
                return slice(m.end() - 1, m.end()) if pool == "last" else slice(*m.span())
    else:
        for i, t in enumerate(tokenizer.split(sentence)):
            if t.lower() == word.lower():
                return slice(i, i + 1)
    raise ConfigError(f"sentence {sentence!r} does not contain the word {word!r}")


def contextual_vectors(word, sentences, model, variables, tokenizer, pool="last"):
    """The model's vectors for the word in each sentence, every layer -> (L + 1, N, E).

    The sentences are right-padded into one batch and run through `hidden_states` in one
    compiled call (the causal LM's vectors at a position do not see the padding after it).
    """
    import jax
    import jax.numpy as jnp

    from dlkit.errors import ConfigError

    where = [_word_position(word, s, tokenizer, pool) for s in sentences]
    try:
        ids = [tokenizer.encode(s) for s in sentences]
    except ValueError as e:
        raise ConfigError(f"a sentence does not fit the model's tokenizer: {e}") from e
    tokens = np.zeros((len(ids), max(map(len, ids))), np.int32)
    for row, x in zip(tokens, ids, strict=True):
        row[: len(x)] = x
    hidden = jax.jit(lambda v, t: model.apply(v, t, method="hidden_states"))(
        variables, jnp.asarray(tokens)
    )
    hidden = np.stack([np.asarray(h, np.float32) for h in hidden])  # (L + 1, N, T, E)
    return np.stack([hidden[:, n, w].mean(1) for n, w in enumerate(where)], 1)


def _off_diagonal_mean(m: np.ndarray) -> float:
    n = len(m)
    return float((m.sum() - np.trace(m)) / max(n * (n - 1), 1))


def compare(word, sentences, words, vectors, model, variables, tokenizer, layer=-1, pool="last"):
    """Cosine matrices for both models and the mean cross-context cosine per Transformer layer."""
    from dlkit.errors import ConfigError

    if len(sentences) < 2:
        raise ConfigError("give at least two sentences (separated by '|') to compare contexts")
    depth = getattr(model, "num_layers", None)
    if depth is not None and not -(depth + 1) <= layer <= depth:
        raise ConfigError(f"layer {layer} out of range; the model has layers 0..{depth}")
    static = cosine_matrix(static_vectors(word, sentences, words, vectors))
    per_layer = [
        cosine_matrix(v)
        for v in contextual_vectors(word, sentences, model, variables, tokenizer, pool)
    ]
    chosen = per_layer[layer]
    return {
        "word": word,
        "sentences": list(sentences),
        "layer": layer % len(per_layer),
        "static": static.tolist(),
        "contextual": chosen.tolist(),
        "static_mean": _off_diagonal_mean(static),
        "contextual_mean": _off_diagonal_mean(chosen),
        "per_layer_mean": [_off_diagonal_mean(m) for m in per_layer],
    }


def report_lines(result: dict) -> list[str]:
    """Pairwise cosine of the word to itself across contexts, word2vec then Transformer."""
    word, sents = result["word"], result["sentences"]
    lines = [f"word {word!r} in {len(sents)} contexts:"]
    lines += [f"  [{i}] {s}" for i, s in enumerate(sents)]
    for name, key in (
        ("word2vec", "static"),
        (f"transformer layer {result['layer']}", "contextual"),
    ):
        m = np.asarray(result[key])
        pairs = ", ".join(
            f"[{i},{j}] {m[i, j]:.3f}" for i in range(len(m)) for j in range(i + 1, len(m))
        )
        lines.append(f"{name}: cos({word}, {word}) across contexts: {pairs}")
        lines.append(f"{name}: mean {result[key + '_mean']:.3f}")
    profile = ", ".join(f"{i}: {v:.3f}" for i, v in enumerate(result["per_layer_mean"]))
    lines.append(f"transformer mean across contexts by layer (0 = embeddings): {profile}")
    return lines


def plot(result: dict, path) -> None:
    """Two heat maps (word2vec, Transformer) and the per-layer mean cross-context cosine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    n = len(result["sentences"])
    low = min(np.min(result["contextual"]), np.min(result["static"]))
    low = max(-1.0, np.floor((low - 0.05) * 20) / 20)  # colour range [low, 1] shows the spread
    for ax, key, title in (
        (axes[0], "static", "word2vec (static)"),
        (axes[1], "contextual", f"Transformer layer {result['layer']} (contextual)"),
    ):
        m = np.asarray(result[key])
        im = ax.imshow(m, vmin=low, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            shade = "k" if v > (low + 1) / 2 else "w"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=shade)
        ax.set_title(f"{title}\nmean off-diagonal {result[key + '_mean']:.3f}")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("context")
        ax.set_ylabel("context")
    fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8, label="cosine")
    layers = range(len(result["per_layer_mean"]))
    axes[2].plot(layers, result["per_layer_mean"], "o-", label="Transformer")
    axes[2].set_xticks(list(layers))
    axes[2].axhline(result["static_mean"], color="k", ls="--", label="word2vec")
    axes[2].set(xlabel="layer (0 = embeddings)", ylabel="mean cosine across contexts")
    axes[2].set_ylim(min(-0.05, min(result["per_layer_mean"]) - 0.05), 1.05)
    axes[2].legend()
    fig.suptitle(f"cos({result['word']!r}, itself) across {n} sentences")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    from dlkit.errors import ConfigError
    from dlkit.train.embeddings import load_vectors
    from dlkit.train.load import load_language_model as load_from_workdir

    sentences = [s.strip() for s in _SENTENCES.value.split("|") if s.strip()]
    lm = pathlib.Path(_LM.value)
    out = pathlib.Path(_OUT.value) if _OUT.value else lm / "static_vs_contextual"
    words, vectors = load_vectors(_VECTORS.value)
    if not (lm / "checkpoints").is_dir():
        raise ConfigError(f"no checkpoints in {lm}; train a transformer_lm there first")
    model, variables, tokenizer = load_from_workdir(lm)
    if not hasattr(model, "hidden_states"):
        raise ConfigError(f"the model in {lm} has no hidden_states(); train a transformer_lm")
    result = compare(
        _WORD.value,
        sentences,
        words,
        vectors,
        model,
        variables,
        tokenizer,
        _LAYER.value,
        _POOL.value,
    )
    out.mkdir(parents=True, exist_ok=True)
    lines = report_lines(result)
    (out / "static_vs_contextual.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "static_vs_contextual.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "static_vs_contextual.png")
    print("\n".join(lines))
    print(f"wrote {out / 'static_vs_contextual.png'}")


if __name__ == "__main__":
    from dlkit import cli

    cli.run(main)
