"""Word2vec data: corpora, frequent-word subsampling, unigram^0.75 noise and packed training rows.

A `Word2VecSource` is a deterministic, seeded, random-access source of packed rows (see
dlkit.nn.word2vec.Word2Vec): skip-gram rows are [center, context, K negatives]; CBOW rows are
[2W context ids (-1 pads), target, K negatives]. Epoch e draws its own subsampling, dynamic
windows, order and negatives from the generator seeded with (seed, e).
"""

import dataclasses
import pathlib
import re

import numpy as np

from dlkit import errors
from dlkit.data import text
from dlkit.data.tokenizers import Tokenizer, build_tokenizer
from dlkit.errors import ConfigError

_NOT_WORD = re.compile(r"[^A-Za-z0-9_'\s]+")
CORPORA = ("pydoc", "tiny_shakespeare")


def corpus_text(corpus: str) -> str:
    """Text of "pydoc" (CPython help topics), "tiny_shakespeare" (shared data or TFDS) or a path."""
    if corpus == "pydoc":
        return text.pydoc_text()
    if corpus == "tiny_shakespeare":
        return text.shakespeare_text()
    path = pathlib.Path(corpus).expanduser()
    if not path.is_file():
        raise ConfigError(f"corpus {corpus!r} is neither one of {', '.join(CORPORA)} nor a file")
    return path.read_text(encoding="utf-8", errors="replace")


def build_vocabulary(text: str, *, min_count: int = 5, max_size: int | None = None) -> Tokenizer:
    """Lower-cased word tokenizer over words only (punctuation dropped); id 0 is <unk>."""
    return build_tokenizer(
        _NOT_WORD.sub(" ", text), "word", max_size=max_size, min_count=min_count, lowercase=True
    )


def corpus_ids(text: str, tokenizer: Tokenizer) -> np.ndarray:
    """Word ids (N,) int32; punctuation and out-of-vocabulary words removed (as word2vec does)."""
    ids = tokenizer.encode(_NOT_WORD.sub(" ", text))
    return ids[ids != 0] if tokenizer.has_unk else ids


def keep_probabilities(counts: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """P(keep w) = min(1, (sqrt(f/t) + 1) t / f), f = count / total (word2vec's rule); (V,)."""
    counts = np.asarray(counts, np.float64)
    if threshold <= 0:
        return np.ones_like(counts)
    f = counts / max(counts.sum(), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(f / threshold) + 1.0) * threshold / f
    return np.where(counts > 0, np.minimum(p, 1.0), 1.0)


def noise_cdf(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Cumulative table of P_n(w) = c_w^power / sum_v c_v^power; (V,) float64, last entry 1."""
    weights = np.asarray(counts, np.float64) ** power
    if weights.sum() <= 0:
        raise ValueError("noise_cdf: every count is zero; the corpus has no in-vocabulary words")
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def draw_noise(rng: np.random.Generator, cdf: np.ndarray, shape) -> np.ndarray:
    """Ids drawn from the noise distribution by inverting cdf (V,) -> shape int32."""
    ids = np.searchsorted(cdf, rng.random(shape), side="right")
    return np.minimum(ids, len(cdf) - 1).astype(np.int32)


def skipgram_pairs(ids: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """(center, context) pairs (P, 2): each center sees b ~ U{1..window} words on both sides."""
    n = len(ids)
    reach = rng.integers(1, window + 1, n)  # word2vec's dynamic window
    pairs = []
    for d in range(1, min(window, n - 1) + 1):
        right = reach[: n - d] >= d  # center i, context i + d
        left = reach[d:] >= d  # center i + d, context i
        pairs.append(np.stack([ids[: n - d][right], ids[d:][right]], 1))
        pairs.append(np.stack([ids[d:][left], ids[: n - d][left]], 1))
    return np.concatenate(pairs).astype(np.int32) if pairs else np.zeros((0, 2), np.int32)


def cbow_rows(ids: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """[context ids (2 * window, -1 pads), target] rows (N, 2W + 1), reach b ~ U{1..window}."""
    n = len(ids)
    reach = rng.integers(1, window + 1, n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])  # (2W,)
    pos = np.arange(n)[:, None] + offsets[None]  # (N, 2W)
    real = (np.abs(offsets)[None] <= reach[:, None]) & (pos >= 0) & (pos < n)
    ctx = np.where(real, ids[np.clip(pos, 0, n - 1)], -1)
    rows = np.concatenate([ctx, ids[:, None]], 1).astype(np.int32)
    return rows[real.any(1)]


@dataclasses.dataclass(frozen=True)
class Word2VecSource:
    """Packed rows of one epoch: len() and [i] -> {"inputs": (N,) int32, "targets": 0}."""

    rows: np.ndarray  # (P, N) int32

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> dict:
        return {"inputs": self.rows[i], "targets": np.int32(0)}

    def batches(self, batch_size: int) -> np.ndarray:
        """(P // batch_size, batch_size, N): the epoch's rows as full batches, in order."""
        n = len(self.rows) // batch_size
        if n == 0:
            raise ConfigError(
                f"batch_size {batch_size} exceeds the {len(self.rows)} rows of one epoch; "
                "use a smaller batch or a larger corpus"
            )
        return self.rows[: n * batch_size].reshape(n, batch_size, -1)


@dataclasses.dataclass(frozen=True)
class Word2VecData:
    """A tokenised corpus plus the sampling settings; `epoch(e)` builds that epoch's source."""

    tokenizer: Tokenizer
    ids: np.ndarray  # (N,) in-vocabulary word ids
    counts: np.ndarray  # (V,) corpus counts
    mode: str = "skipgram"
    window: int = 5
    negatives: int = 5
    subsample: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        errors.choose({"skipgram": 0, "cbow": 0}, self.mode, "word2vec mode")
        if self.window < 1 or self.negatives < 1:
            raise ConfigError(
                f"word2vec window ({self.window}) and negatives ({self.negatives}) must be >= 1"
            )

    @property
    def context_size(self) -> int:
        """Context columns of a CBOW row (2 * window); 1 for skip-gram."""
        return 2 * self.window if self.mode == "cbow" else 1

    def epoch(self, e: int) -> Word2VecSource:
        """Subsample, window, shuffle and draw negatives with the generator seeded (seed, e)."""
        rng = np.random.default_rng([self.seed, e])
        keep = keep_probabilities(self.counts, self.subsample)
        ids = self.ids[rng.random(len(self.ids)) < keep[self.ids]]
        make = skipgram_pairs if self.mode == "skipgram" else cbow_rows
        rows = make(ids, self.window, rng)
        rows = rows[rng.permutation(len(rows))]
        negs = draw_noise(rng, noise_cdf(self.counts), (len(rows), self.negatives))
        return Word2VecSource(np.concatenate([rows, negs], 1))


def make_word2vec_data(
    text: str, *, min_count: int = 5, max_size: int | None = None, **settings
) -> Word2VecData:
    """Word2VecData for `text`; settings: mode, window, negatives, subsample, seed."""
    tok = build_vocabulary(text, min_count=min_count, max_size=max_size)
    ids = corpus_ids(text, tok)
    if len(ids) < 2:
        raise ConfigError(
            f"corpus has {len(ids)} in-vocabulary words (min_count={min_count}); "
            "lower min_count or use a larger corpus"
        )
    counts = np.bincount(ids, minlength=tok.vocab_size).astype(np.int64)
    return Word2VecData(tok, ids, counts, **settings)
