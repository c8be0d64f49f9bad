"""Character and word tokenizers: build a vocabulary, encode, decode, and round-trip through JSON.

A tokenizer is saved with each checkpoint (as a JSON dict) so sampling decodes what training saw.
"""

import collections
import dataclasses
import re

import numpy as np

from dlkit.errors import ConfigError

UNK = "<unk>"
_WORD_RE = re.compile(r"[A-Za-z0-9_']+|[^\sA-Za-z0-9_']")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A vocabulary (id -> token); `kind` is "char" or "word". Id 0 is UNK when `has_unk`."""

    kind: str
    vocab: tuple[str, ...]
    has_unk: bool = True
    lowercase: bool = False

    def __post_init__(self):
        if self.kind not in ("char", "word"):
            raise ValueError(f"tokenizer kind must be 'char' or 'word', got {self.kind!r}")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.vocab)}

    def split(self, text: str) -> list[str]:
        """Text -> tokens (characters, or words and punctuation marks)."""
        text = text.lower() if self.lowercase else text
        return list(text) if self.kind == "char" else _WORD_RE.findall(text)

    def encode(self, text: str) -> np.ndarray:
        """Text -> int32 ids (T,); unknown tokens map to UNK (or raise without one)."""
        index, unk = self.index, 0 if self.has_unk else None
        ids = [index.get(t, unk) for t in self.split(text)]
        if unk is None and None in ids:
            missing = sorted({t for t in self.split(text) if t not in index})[:10]
            raise ConfigError(f"tokens not in the vocabulary and no {UNK} token: {missing}")
        return np.asarray(ids, np.int32)

    def decode(self, ids) -> str:
        """Ids -> text (characters joined, or words joined by spaces)."""
        tokens = [self.vocab[int(i)] for i in np.asarray(ids).reshape(-1)]
        return "".join(tokens) if self.kind == "char" else " ".join(tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls(**{**d, "vocab": tuple(d["vocab"])})


def build_tokenizer(
    text: str,
    kind: str = "char",
    *,
    max_size: int | None = None,
    min_count: int = 1,
    unk: bool | None = None,
    lowercase: bool = False,
) -> Tokenizer:
    """Vocabulary of tokens seen >= min_count times, most frequent first, max_size with UNK."""
    probe = Tokenizer(kind, (), True, lowercase)
    counts = collections.Counter(probe.split(text))
    unk = (kind == "word") if unk is None else unk
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    if kind == "char":
        kept.sort()  # stable, readable ids for characters
    if max_size is not None:
        kept = kept[: max_size - int(unk)]
    return Tokenizer(kind, ((UNK,) if unk else ()) + tuple(kept), unk, lowercase)
