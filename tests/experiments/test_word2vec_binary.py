"""Word2vec end to end: training learns co-occurrence, vectors round-trip, transfer, the binary."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dlkit.data.tokenizers import build_tokenizer
from dlkit.data.word2vec import make_word2vec_data
from dlkit.errors import ConfigError
from dlkit.extras import word2vec as w2v
from dlkit.ops.word2vec import nearest_neighbours
from dlkit.train import embeddings

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = [sys.executable, str(ROOT / "experiments" / "word2vec.py")]


def _two_topic_text(seed=0, sentences=300):
    """Sentences of 8 words drawn from one of two disjoint groups (a0..a9 or b0..b9)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(sentences):
        group = "ab"[rng.integers(2)]
        lines.append(" ".join(f"{group}{i}" for i in rng.integers(0, 10, 8)) + ".")
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_training_puts_cooccurring_words_together(mode):
    data = make_word2vec_data(
        _two_topic_text(), min_count=1, mode=mode, window=2, negatives=4, subsample=0.0
    )
    state, history = w2v.train_word2vec(
        data, features=16, batch_size=256, num_steps=120, learning_rate=2e-2, steps_per_call=40
    )
    assert [h["step"] for h in history] == [40, 80, 120]
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]
    words, vectors = w2v.word_vectors(state, data)
    assert len(words) == 20 and "<unk>" not in words
    same = 0
    for i, w in enumerate(words):
        ids, _ = nearest_neighbours(vectors, vectors[i], k=3, exclude=[i])
        same += sum(words[j][0] == w[0] for j in ids)
    assert same / (3 * len(words)) > 0.9


def test_save_load_and_embedding_table(tmp_path):
    words = ["the", "king", "Queen"]
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    paths = embeddings.save_vectors(tmp_path, words, vectors, counts=[9, 4, 2])
    assert sorted(p.name for p in paths.values()) == [
        "metadata.tsv",
        "projector_config.pbtxt",
        "vectors.npz",
        "vectors.tsv",
    ]
    assert (tmp_path / "metadata.tsv").read_text().splitlines() == [
        "word\tcount",
        "the\t9",
        "king\t4",
        "Queen\t2",
    ]
    np.testing.assert_allclose(np.loadtxt(tmp_path / "vectors.tsv", delimiter="\t"), vectors)
    assert 'tensor_path: "vectors.tsv"' in (tmp_path / "projector_config.pbtxt").read_text()
    loaded_words, loaded = embeddings.load_vectors(tmp_path)
    assert loaded_words == words and np.array_equal(loaded, vectors)

    tok = build_tokenizer("The king and the crown", "word", lowercase=False)  # cased vocabulary
    table, report = embeddings.embedding_table(tok, tmp_path, seed=3, scale=0.01)
    index = tok.index
    np.testing.assert_array_equal(table[index["king"]], vectors[1])
    np.testing.assert_array_equal(table[index["The"]], vectors[0])  # lower-case fallback
    missing = [index[t] for t in ("<unk>", "and", "crown")]
    assert np.abs(table[missing]).max() < 0.06  # N(0, 0.01^2), drawn
    assert report["matched"] == 3 and report["missing"] == 3 and report["vocab_size"] == 6
    assert report["coverage"] == 0.5 and set(report["missing_examples"]) == {
        "<unk>",
        "and",
        "crown",
    }
    again, _ = embeddings.embedding_table(tok.vocab, (words, vectors), seed=3, scale=0.01)
    np.testing.assert_array_equal(table, again)  # seeded
    with pytest.raises(ConfigError, match="no word vectors"):
        embeddings.load_vectors(tmp_path / "nowhere")


def test_binary_writes_projector_files(tmp_path):
    out = subprocess.run(
        [
            *BINARY,
            "--corpus=pydoc",
            f"--workdir={tmp_path}",
            "--num_steps=2",
            "--steps_per_call=2",
            "--batch_size=256",
            "--dim=8",
            "--query=class,zzzz",
            "--analogy=class:def:function",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final: step=2" in out.stdout
    for name in ("vectors.npz", "vectors.tsv", "metadata.tsv", "projector_config.pbtxt"):
        assert (tmp_path / name).is_file()
    words, vectors = embeddings.load_vectors(tmp_path / "vectors.npz")
    assert vectors.shape == (len(words), 8)
    lines = (tmp_path / "neighbours.txt").read_text().splitlines()
    assert lines[0].startswith("class: ") and lines[0].count("(") == 8
    assert lines[1] == "zzzz: not in the vocabulary"
    assert lines[2].startswith("class - def + function: ")

    svc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "static_vs_contextual.py"),
            f"--vectors={tmp_path}",
            f"--lm_workdir={tmp_path / 'no_lm'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # the vectors load; the missing Transformer is reported in one line
    assert svc.returncode != 0 and "Traceback" not in svc.stderr
    assert svc.stderr.strip().splitlines()[-1].startswith("error: no checkpoints in ")

    bad = subprocess.run(
        [*BINARY, f"--corpus={tmp_path / 'missing.txt'}", f"--workdir={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: corpus ")
