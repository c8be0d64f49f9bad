"""Word2vec data: subsampling, unigram^0.75 noise, skip-gram/CBOW windows, seeded epochs."""

import collections

import numpy as np
import pytest

from dlkit.data import word2vec as wd
from dlkit.errors import ConfigError


def test_keep_probabilities_follow_word2vec_rule():
    counts = np.array([0, 1, 10, 989])  # f = 0, 0.001, 0.01, 0.989
    p = wd.keep_probabilities(counts, threshold=1e-3)
    f = counts[1:] / counts.sum()
    want = np.minimum((np.sqrt(f / 1e-3) + 1) * 1e-3 / f, 1.0)
    np.testing.assert_allclose(p[1:], want)
    assert p[0] == 1.0 and p[1] == 1.0 and p[3] < 0.05  # rare kept, frequent mostly dropped
    assert np.all(wd.keep_probabilities(counts, threshold=0) == 1)


def test_noise_draws_follow_unigram_to_the_three_quarters():
    counts = np.array([0, 1, 16, 81, 0, 256])
    cdf = wd.noise_cdf(counts)
    want = counts**0.75 / np.sum(counts**0.75)
    np.testing.assert_allclose(np.diff(cdf, prepend=0.0), want, atol=1e-12)
    draws = wd.draw_noise(np.random.default_rng(0), cdf, (200_000,))
    freq = np.bincount(draws, minlength=len(counts)) / draws.size
    np.testing.assert_allclose(freq, want, atol=0.005)
    assert freq[0] == 0 and freq[4] == 0  # zero-count words (e.g. <unk>) never drawn
    with pytest.raises(ValueError, match="every count is zero"):
        wd.noise_cdf(np.zeros(3))


def _reach(seed, window, n):
    return np.random.default_rng(seed).integers(1, window + 1, n)


def test_skipgram_pairs_match_loop_reference():
    ids, window = np.arange(100, 140), 3  # unique ids reveal positions
    pairs = wd.skipgram_pairs(ids, window, np.random.default_rng(5))
    reach = _reach(5, window, len(ids))
    want = [
        (ids[i], ids[j])
        for i in range(len(ids))
        for j in range(max(0, i - reach[i]), min(len(ids), i + reach[i] + 1))
        if j != i
    ]
    assert collections.Counter(map(tuple, pairs.tolist())) == collections.Counter(want)


def test_cbow_rows_match_loop_reference():
    ids, window = np.arange(50, 70), 2
    rows = wd.cbow_rows(ids, window, np.random.default_rng(3))
    reach = _reach(3, window, len(ids))
    assert rows.shape == (len(ids), 2 * window + 1)
    for i, row in enumerate(rows):
        offsets = [-2, -1, 1, 2]
        want = [ids[i + o] if abs(o) <= reach[i] and 0 <= i + o < len(ids) else -1 for o in offsets]
        assert row.tolist() == want + [ids[i]]


def _data(**kw):
    text = " ".join(["the cat sat on the mat", "the dog ate the bone", "a bird sang"] * 60)
    return wd.make_word2vec_data(text, min_count=1, **kw)


def test_epochs_are_seeded_random_access_sources():
    data = _data(window=2, negatives=3, seed=7)
    a, b, c = data.epoch(0), data.epoch(0), data.epoch(1)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.rows.shape != c.rows.shape or np.any(a.rows != c.rows)
    assert a.rows.shape[1] == 2 + 3 and a[5]["inputs"].tolist() == a.rows[5].tolist()
    negatives = a.rows[:, 2:]
    assert negatives.min() >= 1 and negatives.max() < data.tokenizer.vocab_size  # never <unk>
    batches = a.batches(16)
    assert batches.shape == (len(a) // 16, 16, 5)
    np.testing.assert_array_equal(batches[1, 0], a.rows[16])
    with pytest.raises(ConfigError, match="batch_size"):
        a.batches(len(a) + 1)
    cbow = _data(mode="cbow", window=2, negatives=2).epoch(0)
    assert cbow.rows.shape[1] == 4 + 1 + 2


def test_subsampling_thins_frequent_words():
    data = _data(subsample=1e-2)
    the = data.tokenizer.index["the"]
    share = lambda ids: np.mean(ids == the)  # noqa: E731
    kept = data.epoch(0).rows[:, 0]  # skip-gram centers
    assert share(kept) < 0.7 * share(data.ids)


def test_vocabulary_drops_punctuation_and_rare_words():
    data = wd.make_word2vec_data("Hello, world! Hello again; hello WORLD.", min_count=2)
    assert data.tokenizer.vocab == ("<unk>", "hello", "world")
    assert data.ids.tolist() == [1, 2, 1, 1, 2]  # "again" (rare) removed, not <unk>
    with pytest.raises(ConfigError, match="in-vocabulary words"):
        wd.make_word2vec_data("one two three", min_count=5)
    with pytest.raises(ConfigError, match="mode"):
        _data(mode="glove")


def test_corpora(tmp_path):
    assert "lambda" in wd.corpus_text("pydoc")
    path = tmp_path / "c.txt"
    path.write_text("to be or not to be")
    assert wd.corpus_text(str(path)) == "to be or not to be"
    with pytest.raises(ConfigError, match="neither one of"):
        wd.corpus_text(str(tmp_path / "missing.txt"))


def test_tiny_shakespeare_corpus(shared_data):
    assert wd.corpus_text("tiny_shakespeare").startswith("First Citizen")
