"""Text corpora: next-character windows, the held-out tail, the saved tokenizer, Grain resume."""

import numpy as np
import pytest

from dlkit import data
from dlkit.data import text
from dlkit.errors import ConfigError


def test_windows_are_shifted_by_one():
    ids = np.arange(20, dtype=np.int32)
    src = text.WindowSource(ids, seq_len=5, stride=3)
    assert len(src) == 5  # starts 0, 3, 6, 9, 12 (12 + 5 + 1 <= 20)
    np.testing.assert_array_equal(src[1]["inputs"], [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(src[1]["targets"], [4, 5, 6, 7, 8])
    np.testing.assert_array_equal(src[4]["targets"], [13, 14, 15, 16, 17])
    with pytest.raises(IndexError):
        src[5]
    with pytest.raises(ConfigError, match="too short for windows of seq_len=30"):
        text.WindowSource(ids, seq_len=30, stride=1)
    assert "mask" not in src[0]


def test_context_windows_score_only_their_last_seq_len_targets():
    ids = np.arange(20, dtype=np.int32)
    src = text.WindowSource(ids, seq_len=4, stride=4, context=3)
    assert len(src) == 4  # windows of 7 at 0, 4, 8, 12 (12 + 7 + 1 <= 20)
    ex = src[1]
    np.testing.assert_array_equal(ex["inputs"], [4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(ex["mask"], [0, 0, 0, 1, 1, 1, 1])
    scored = np.concatenate([src[i]["targets"][src[i]["mask"] > 0] for i in range(len(src))])
    np.testing.assert_array_equal(scored, np.arange(4, 20))  # each target once, none twice
    ds = data.load({"name": "pydoc", "seq_len": 32, "eval_context": 16})
    batch = data.eval_batches(ds, 8)[0]
    assert batch["inputs"].shape == (8, 48) and batch["mask"][:, :16].sum() == 0
    assert ds.example_batch(2)["inputs"].shape == (2, 32)  # training windows have no context


def test_pydoc_corpus_split_and_tokenizer_assets():
    ds = data.load({"name": "pydoc", "seq_len": 64, "eval_fraction": 0.1})
    corpus = text.pydoc_text()
    tok = text.tokenizer_from_assets(ds.assets)
    assert ds.num_classes == tok.vocab_size == len(set(corpus))
    ids = tok.encode(corpus)
    split = int(len(ids) * 0.9)
    np.testing.assert_array_equal(ds.train.ids, ids[:split])
    np.testing.assert_array_equal(ds.test.ids, ids[split:])  # the held-out tail, no overlap
    assert len(ds.test) == (len(ids) - split - 65) // 64 + 1
    ex = ds.preprocess(ds.test[3])
    assert tok.decode(ex["inputs"]) == corpus[split + 192 : split + 256]
    assert ex["inputs"].dtype == ex["targets"].dtype == np.int32
    batch = data.eval_batches(ds, 32)[-1]
    assert batch["mask"].shape == (32, 64)  # per-token mask; padded rows are 0
    assert batch["mask"][: len(ds.test) % 32].all() and not batch["mask"][len(ds.test) % 32 :].any()


def test_text_file_by_path(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("to be or not to be " * 20)
    ds = data.load({"name": "tiny_shakespeare", "path": str(path), "seq_len": 8})
    assert text.tokenizer_from_assets(ds.assets).vocab == tuple(sorted(set("to be or n")))
    assert data.load({"name": "text_file", "path": str(path), "seq_len": 8}).num_classes == 7
    with pytest.raises(ConfigError, match="no text at .*missing.txt"):
        data.load({"name": "tiny_shakespeare", "path": str(tmp_path / "missing.txt")})
    with pytest.raises(ConfigError, match="eval_fraction must be in"):
        data.load({"name": "text_file", "path": str(path), "eval_fraction": 1.5})


def test_shared_tiny_shakespeare(shared_data):
    ds = data.load({"name": "tiny_shakespeare", "seq_len": 128})
    tok = text.tokenizer_from_assets(ds.assets)
    assert ds.num_classes == 65
    assert len(ds.train.ids) + len(ds.test.ids) == 1_115_394
    assert tok.decode(ds.train[0]["inputs"][:14]) == "First Citizen:"


def test_train_windows_are_deterministic_and_resume_exactly():
    ds = data.load({"name": "pydoc", "seq_len": 16, "train_stride": 8})
    a = data.train_iterator(ds, batch_size=4, seed=3)
    first = [next(a) for _ in range(3)]
    state = a.get_state()
    rest = [next(a) for _ in range(3)]
    b = data.train_iterator(ds, batch_size=4, seed=3)
    b.set_state(state)
    for x, y in zip(rest, [next(b) for _ in range(3)], strict=True):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    again = data.train_iterator(ds, batch_size=4, seed=3)
    np.testing.assert_array_equal(next(again)["targets"], first[0]["targets"])
    other = data.train_iterator(ds, batch_size=4, seed=4)
    assert not np.array_equal(next(other)["inputs"], first[0]["inputs"])
    np.testing.assert_array_equal(first[0]["inputs"][:, 1:], first[0]["targets"][:, :-1])
