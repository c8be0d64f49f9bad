"""Trains word2vec (skip-gram or CBOW, negative sampling) and writes vectors for the projector.

  python experiments/word2vec.py --corpus=tiny_shakespeare --workdir=workdirs/w2v_shakespeare
  python experiments/word2vec.py --corpus=pydoc --mode=cbow --num_steps=500 --workdir=/tmp/w2v
  tensorboard --logdir=workdirs/w2v_shakespeare   # PROJECTOR tab (projector_config.pbtxt)

Writes vectors.npz (words, vectors, counts), vectors.tsv, metadata.tsv, projector_config.pbtxt
and neighbours.txt (nearest neighbours by cosine for --query words, and --analogy a:b:c = a-b+c).
"""

import json
import pathlib
import sys
import time

from absl import app, flags

from dlkit.data.word2vec import corpus_text, make_word2vec_data
from dlkit.errors import ConfigError
from dlkit.extras import word2vec as w2v
from dlkit.ops.word2vec import analogy, nearest_neighbours
from dlkit.train import embeddings

_CORPUS = flags.DEFINE_string("corpus", "pydoc", "pydoc, tiny_shakespeare, or a text file path.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default workdirs/w2v_<corpus>).")
_MODE = flags.DEFINE_enum("mode", "skipgram", ["skipgram", "cbow"], "Word2vec architecture.")
_DIM = flags.DEFINE_integer("dim", 64, "Embedding size.")
_WINDOW = flags.DEFINE_integer("window", 3, "Largest context reach (dynamic window 1..window).")
_NEGATIVES = flags.DEFINE_integer("negatives", 5, "Noise words per pair (unigram^0.75).")
_MIN_COUNT = flags.DEFINE_integer("min_count", 5, "Words seen fewer times are dropped.")
_MAX_VOCAB = flags.DEFINE_integer("max_vocab", None, "Vocabulary size limit (incl. <unk>).")
_SUBSAMPLE = flags.DEFINE_float("subsample", 1e-3, "Frequent-word subsampling threshold t.")
_BATCH = flags.DEFINE_integer("batch_size", 4096, "Rows (pairs) per step.")
_STEPS = flags.DEFINE_integer("num_steps", 3000, "Optimizer steps (Adam, cosine schedule).")
_PER_CALL = flags.DEFINE_integer("steps_per_call", 50, "Steps per jitted lax.scan call.")
_LR = flags.DEFINE_float("learning_rate", 1e-2, "Peak Adam learning rate.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation, subsampling and negatives.")
_QUERY = flags.DEFINE_list(
    "query", "king,queen,love,death,my,lord,man,thou", "Words to list neighbours for."
)
_ANALOGY = flags.DEFINE_list("analogy", "he:his:her,king:man:woman", "a:b:c triples, a - b + c.")
_K = flags.DEFINE_integer("num_neighbours", 8, "Neighbours per query word.")


def _listing(words, ids, sims) -> str:
    return ", ".join(f"{words[j]} ({s:.2f})" for j, s in zip(ids, sims, strict=True))


def report_lines(words, vectors, queries, analogies, k: int) -> list[str]:
    """Neighbour and analogy lines: 'word: n1 (0.71), n2 (0.63), ...'."""
    index = {w: i for i, w in enumerate(words)}
    lines = []
    for q in queries:
        if q.lower() not in index:
            lines.append(f"{q}: not in the vocabulary")
            continue
        i = index[q.lower()]
        ids, sims = nearest_neighbours(vectors, vectors[i], k, exclude=[i])
        lines.append(f"{q}: " + _listing(words, ids, sims))
    for triple in analogies:
        parts = triple.lower().split(":")
        if len(parts) != 3 or any(p not in index for p in parts):
            lines.append(f"{triple}: needs a:b:c with all three words in the vocabulary")
            continue
        ids, sims = analogy(vectors, *(index[p] for p in parts), k=5)
        a, b, c = parts
        lines.append(f"{a} - {b} + {c}: " + _listing(words, ids, sims))
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from dlkit import cli, platform

    cli.show_progress()  # the door: dlkit's progress lines print
    platform.choose_threefry()  # DLKIT_THREEFRY=unrolled: the same bits, faster compiles
    workdir = pathlib.Path(_WORKDIR.value or f"workdirs/w2v_{pathlib.Path(_CORPUS.value).stem}")
    start = time.perf_counter()
    try:
        data = make_word2vec_data(
            corpus_text(_CORPUS.value),
            min_count=_MIN_COUNT.value,
            max_size=_MAX_VOCAB.value,
            mode=_MODE.value,
            window=_WINDOW.value,
            negatives=_NEGATIVES.value,
            subsample=_SUBSAMPLE.value,
            seed=_SEED.value,
        )
        print(f"corpus {_CORPUS.value}: {len(data.ids)} words, vocabulary {len(data.counts)}")
        state, history = w2v.train_word2vec(
            data,
            features=_DIM.value,
            batch_size=_BATCH.value,
            num_steps=_STEPS.value,
            learning_rate=_LR.value,
            steps_per_call=_PER_CALL.value,
            seed=_SEED.value,
            log_fn=lambda r: print(f"step {r['step']}: loss {r['loss']:.4f}", flush=True),
        )
    except ConfigError as e:
        sys.exit(f"error: {e}")
    words, vectors = w2v.word_vectors(state, data)
    embeddings.save_vectors(workdir, words, vectors, data.counts[len(data.counts) - len(words) :])
    lines = report_lines(words, vectors, _QUERY.value, _ANALOGY.value, _K.value)
    (workdir / "neighbours.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    print("\n".join(lines))
    print(
        f"final: step={history[-1]['step']} loss={history[-1]['loss']:.4f} "
        f"wall_seconds={time.perf_counter() - start:.1f} wrote {workdir}"
    )


if __name__ == "__main__":
    app.run(main)
