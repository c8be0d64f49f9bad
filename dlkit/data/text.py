"""Text corpora as fixed-length next-token windows for language models.

Corpora: `pydoc` (CPython's pydoc_data.topics, offline everywhere, the default),
`tiny_shakespeare` (config `data.path`, else <shared data>/tinyshakespeare/input.txt, else TFDS
`tiny_shakespeare` prepared as array_record under `data.tfds_dir`) and `text_file` (`data.path`).
The last `eval_fraction` of the token ids is held out; training windows start every
`train_stride` ids. An example is {"inputs": ids[s:s+T], "targets": ids[s+1:s+T+1]}, both (T,)
int32. Held-out windows score disjoint stretches of T characters; with `eval_context` C > 0 each
is preceded by the C characters before it (mask 0: they only warm the state up), so every scored
character has at least C characters of history. The tokenizer's `to_dict()` is the Dataset's
`assets["tokenizer"]`, saved with every checkpoint.
"""

import pathlib

import numpy as np

from dlkit.data.dataset import Dataset, shared_data_dir
from dlkit.data.tokenizers import Tokenizer, build_tokenizer
from dlkit.errors import ConfigError


class WindowSource:
    """Random-access windows of a 1-D id array: [i] -> inputs ids[s:s+L], targets shifted by one.

    L = context + seq_len; with context > 0 the example also has "mask" (L,) that is 0 on the first
    `context` positions: they only warm the recurrent state up and are not scored.
    """

    def __init__(self, ids: np.ndarray, seq_len: int, stride: int, context: int = 0):
        if seq_len < 1 or stride < 1 or context < 0:
            raise ConfigError(
                f"seq_len ({seq_len}) and stride ({stride}) must be >= 1, context ({context}) >= 0"
            )
        self.length = context + seq_len
        if len(ids) < self.length + 1:
            raise ConfigError(
                f"text of {len(ids)} tokens is too short for windows of seq_len={seq_len} "
                f"(+{context} context, +1); use a smaller data.seq_len or data.eval_fraction"
            )
        self.ids, self.seq_len, self.stride = np.asarray(ids, np.int32), seq_len, stride
        self.context = context

    def __len__(self) -> int:
        return (len(self.ids) - self.length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        s = int(index) * self.stride
        w = self.ids[s : s + self.length + 1]
        out = {"inputs": w[:-1], "targets": w[1:]}
        if self.context:
            out["mask"] = (np.arange(self.length) >= self.context).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return (
            f"WindowSource({len(self.ids)} ids, seq_len={self.seq_len}, stride={self.stride}, "
            f"context={self.context})"
        )


def pydoc_text() -> str:
    """CPython's pydoc help topics, joined in sorted topic order (about 465k characters)."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def _tfds_text(name: str, tfds_dir: str | None) -> str | None:
    """All splits of a prepared (array_record) TFDS text dataset joined, or None if not there."""
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=tfds_dir or None)
        if not builder.is_prepared():
            return None
        parts = []
        for split in ("train", "validation", "test"):
            source = builder.as_data_source(split=split)
            parts += [source[i]["text"] for i in range(len(source))]
    except Exception:  # noqa: BLE001 - any TFDS failure means "not available here"
        return None
    return "".join(p.decode() if isinstance(p, bytes) else str(p) for p in parts)


def shakespeare_text(path: str | None = None, tfds_dir: str | None = None) -> str:
    """Tiny Shakespeare from `path`, the shared data folder, or a prepared TFDS copy."""
    shared = shared_data_dir()
    if path:
        file = pathlib.Path(path)
    else:
        file = pathlib.Path(shared or "<no shared data dir>") / "tinyshakespeare" / "input.txt"
    if file.is_file():
        return read_utf8(file)
    text = None if path else _tfds_text("tiny_shakespeare", tfds_dir)
    if text is None:
        raise ConfigError(
            f"tiny_shakespeare: no text at {file} and no prepared TFDS copy; set data.path to a "
            "text file or put input.txt in <shared data>/tinyshakespeare/ ($DLKIT_SHARED_DATA)"
        )
    return text


def read_utf8(path) -> str:
    """The text of a UTF-8 file; ConfigError naming the first bad byte otherwise."""
    raw = pathlib.Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "give a UTF-8 text file as data.path"
        ) from None


def _field(cfg, name, default):
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value in (None, "") else value


def make_text_dataset(name: str, text: str, cfg):
    """Tokenizes text, holds out its tail and returns the Dataset of windows (see module doc)."""
    seq_len = int(_field(cfg, "seq_len", 128))
    stride = int(_field(cfg, "train_stride", seq_len))
    frac = float(_field(cfg, "eval_fraction", 0.1))
    context = int(_field(cfg, "eval_context", 0))
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"data.eval_fraction must be in (0, 1), got {frac}")
    if _field(cfg, "tokenizer", "char") != "char":
        raise ConfigError(f"text datasets use a 'char' tokenizer, got {cfg.tokenizer!r}")
    tok = build_tokenizer(text, "char", unk=False)
    ids = tok.encode(text)
    split = int(len(ids) * (1.0 - frac))
    return Dataset(
        name=name,
        train=WindowSource(ids[:split], seq_len, stride),
        test=WindowSource(ids[split:], seq_len, seq_len, context),
        num_classes=tok.vocab_size,
        preprocess=_identity,
        assets={"tokenizer": tok.to_dict()},
    )


def _identity(example: dict) -> dict:
    return dict(example)


def tokenizer_from_assets(assets: dict) -> Tokenizer:
    """The tokenizer saved with a checkpoint by a text Dataset."""
    d = assets.get("tokenizer", assets)  # nested by text datasets, or a bare to_dict()
    if "vocab" not in d:
        raise ConfigError(f"checkpoint assets hold no tokenizer (keys: {sorted(assets)})")
    return Tokenizer.from_dict(d)


def load_pydoc(cfg):
    return make_text_dataset("pydoc", pydoc_text(), cfg)


def load_tiny_shakespeare(cfg):
    text = shakespeare_text(_field(cfg, "path", None), _field(cfg, "tfds_dir", None))
    return make_text_dataset("tiny_shakespeare", text, cfg)


def load_text_file(cfg):
    path = _field(cfg, "path", None)
    if not path or not pathlib.Path(path).is_file():
        raise ConfigError(f"text_file needs data.path set to an existing text file, got {path!r}")
    return make_text_dataset("text_file", read_utf8(path), cfg)


DATASETS = {
    "pydoc": load_pydoc,
    "tiny_shakespeare": load_tiny_shakespeare,
    "text_file": load_text_file,
}
