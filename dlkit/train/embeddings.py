"""Word vectors as a library: save/load them and build an embedding table from them (transfer).

The word2vec trainer itself serves experiments only: `dlkit.extras.word2vec`.
"""

import pathlib

import numpy as np

from dlkit.errors import ConfigError


def save_vectors(workdir, words, vectors, counts=None) -> dict:
    """Writes vectors.npz, vectors.tsv, metadata.tsv and projector_config.pbtxt; returns paths."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape[0] != len(words):
        raise ValueError(f"save_vectors: {len(words)} words but vectors {vectors.shape}")
    counts = np.zeros(len(words), np.int64) if counts is None else np.asarray(counts)
    paths = {k: workdir / k for k in ("vectors.npz", "vectors.tsv", "metadata.tsv")}
    np.savez(paths["vectors.npz"], words=np.asarray(words), vectors=vectors, counts=counts)
    np.savetxt(paths["vectors.tsv"], vectors, fmt="%.6g", delimiter="\t")
    lines = ["word\tcount"] + [f"{w}\t{c}" for w, c in zip(words, counts, strict=True)]
    paths["metadata.tsv"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["projector_config.pbtxt"] = workdir / "projector_config.pbtxt"
    paths["projector_config.pbtxt"].write_text(
        'embeddings {\n  tensor_name: "word2vec"\n  tensor_path: "vectors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n}\n'
    )
    return paths


def load_vectors(path) -> tuple[list[str], np.ndarray]:
    """(words, vectors (N, D)) from a vectors.npz file or a workdir that holds one."""
    path = pathlib.Path(path)
    path = path / "vectors.npz" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"no word vectors at {path}; run experiments/word2vec.py first")
    with np.load(path) as f:
        return [str(w) for w in f["words"]], np.asarray(f["vectors"], np.float32)


def embedding_table(vocab, source, *, seed: int = 0, scale: float | None = None):
    """(table (V, D), report) for vocab (a Tokenizer or tokens) from saved vectors.

    `source` is a path (see load_vectors) or (words, vectors). A token is looked up as written,
    then lower-cased; missing rows are N(0, scale^2), scale defaulting to the vectors' std.
    """
    tokens = list(getattr(vocab, "vocab", vocab))
    words, vectors = load_vectors(source) if isinstance(source, (str, pathlib.Path)) else source
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"embedding_table: {len(words)} words but vectors {vectors.shape}")
    index = {w: i for i, w in enumerate(words)}
    scale = float(vectors.std()) if scale is None else scale
    table = np.random.default_rng(seed).normal(0.0, scale, (len(tokens), vectors.shape[1]))
    table = table.astype(np.float32)
    missing = []
    for row, tok in enumerate(tokens):
        hit = index.get(tok, index.get(tok.lower()))
        if hit is None:
            missing.append(tok)
        else:
            table[row] = vectors[hit]
    matched = len(tokens) - len(missing)
    report = {
        "vocab_size": len(tokens),
        "matched": matched,
        "missing": len(missing),
        "coverage": matched / max(len(tokens), 1),
        "missing_examples": missing[:10],
    }
    return table, report
