"""What pre-training buys: pre-train the `cnn` on MNIST digits 0-4 (the shared split), then learn
digits 5-9 from 100 labelled examples three ways (frozen backbone + new head, full fine-tuning,
from scratch); prints test accuracy against steps as a table and saves transfer.png.

  python experiments/transfer.py --workdir=workdirs/transfer
  python experiments/transfer.py --smoke --workdir=/tmp/transfer_smoke   # tiny cnn on 8x8 digits
  python experiments/transfer.py --text --workdir=workdirs/transfer_text  # char LM, word2vec start
  python experiments/transfer.py --weights=resnet18.pth --workdir=workdirs/transfer_r18

With --weights (a PyTorch .pth/.pt/.safetensors file in the layout of --convert, e.g. a torchvision
ResNet-18 state_dict) there is no pre-training: the three runs start from the file, converted by
dlkit.convert (config.transfer.init_from + config.transfer.convert), with ImageNet preprocessing
(data.preprocess="imagenet", grey digits repeated to 3 channels, resized to --image_size).
`python experiments/random_resnet_weights.py --out=r18.safetensors` writes a random-weight file in
torchvision's layout when no real one is at hand.

The text variant trains skip-gram vectors on the characters of the training text, then a char
LSTM whose embedding starts from them (config.transfer.vectors) against a random start.

Every run is an ordinary dlkit run in its own sub-workdir (pretrain/, frozen/, finetune/,
scratch/): rerunning the command resumes or just reports.
"""

import json
import pathlib
import sys
import time

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/transfer", "Root of the four run workdirs.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny cnn on the 8x8 digits, a few steps (tests).")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 600, "Steps on digits 0-4.")
_STEPS = flags.DEFINE_integer("steps", 300, "Steps of each run on the 100 examples of 5-9.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 25, "Test accuracy every this many steps.")
_EXAMPLES = flags.DEFINE_integer("examples", 100, "Labelled training examples of digits 5-9.")
_BACKBONE_LR = flags.DEFINE_float("backbone_lr_scale", 0.1, "Fine-tuning: backbone lr factor.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Repeats (seed k: init, order, which 100 examples).")
_NEW = flags.DEFINE_list(
    "new_layers", "dense_.*,head/.*", "Path patterns initialised fresh; the rest is the backbone."
)

_WEIGHTS = flags.DEFINE_string(
    "weights", None, "A PyTorch weights file to start from (no pretrain)."
)
_CONVERT = flags.DEFINE_string("convert", "resnet18", "--weights layout: a dlkit.convert name.")
_WIDTH = flags.DEFINE_integer("width", 64, "--weights: the ResNet's base width (torchvision: 64).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "--weights: images resized to this side.")

_TEXT = flags.DEFINE_bool("text", False, "The text variant: char LM, word2vec vs random start.")
_CORPUS = flags.DEFINE_string("corpus", "pydoc", "Text variant corpus: pydoc or tiny_shakespeare.")
_W2V_STEPS = flags.DEFINE_integer("w2v_steps", 600, "Text variant: skip-gram steps on characters.")

RUNS = ("frozen", "finetune", "scratch")
TEXT_RUNS = ("word2vec", "random")


def base_config(smoke: bool):
    """The cnn (notes' network, or a tiny one with --smoke) with AdamW; data set by the caller."""
    from dlkit.train.config import default_config

    c = default_config()
    c.model.name = "cnn"
    c.model.dropout_rate = 0.3
    c.data.name = "mnist"
    c.batch_size = 32
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.progress_bar = False
    if smoke:
        c.model.features, c.model.hidden, c.data.name, c.batch_size = (4, 8), (16,), "digits", 16
    return c


def pretrain_config(smoke: bool, steps: int):
    c = base_config(smoke)
    c.data.classes = (0, 1, 2, 3, 4)
    c.num_train_steps = steps
    c.log_every_steps = c.eval_every_steps = c.checkpoint.every_steps = max(steps // 4, 1)
    return c


def task_config(kind, smoke, steps, eval_every, pretrained, seed, *, flags_):
    """Digits 5-9 (relabelled 0-4) from `examples` images; kind: frozen, finetune or scratch."""
    c = base_config(smoke)
    c.seed = seed
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.num_train_examples = flags_["examples"]
    c.data.subset_seed = seed
    c.num_train_steps = steps
    c.log_every_steps = c.eval_every_steps = eval_every
    c.checkpoint.every_steps = steps
    if kind != "scratch":
        c.transfer.init_from = str(pretrained)
        c.transfer.skip = tuple(flags_["new_layers"])  # a new classifier with a 5-way head
    if kind == "frozen":  # everything but the new layers
        c.transfer.freeze = ("(?!(?:" + "|".join(flags_["new_layers"]) + ")$).*",)
    if kind == "finetune":
        c.transfer.backbone_lr_scale = flags_["backbone_lr_scale"]
    if flags_.get("weights"):
        imported(c, flags_)
    return c


def imported(c, flags_) -> None:
    """Turns a task config into one that starts from a PyTorch weights file (ImageNet inputs)."""
    c.model = type(c.model)({"name": flags_["convert"]})
    if flags_["convert"].startswith("resnet"):
        c.model.width = flags_["width"]
    c.data.preprocess = "imagenet"
    c.data.image_size = flags_["image_size"]
    if c.transfer.get("init_from"):
        c.transfer.init_from = str(flags_["weights"])
        c.transfer.convert = flags_["convert"]


def eval_curve(workdir, key: str = "eval_accuracy") -> dict[int, float]:
    """{step: metric} from a run's metrics.jsonl."""
    curve = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if key in row:
            curve[int(row["step"])] = float(row[key])
    return curve


def mean_curves(curves: dict[str, list[dict]]) -> dict[str, dict[int, float]]:
    """{kind: {step: mean accuracy over the seeds that evaluated that step}}."""
    out = {}
    for kind, runs in curves.items():
        steps = sorted(set().union(*runs))
        out[kind] = {
            s: sum(r[s] for r in runs if s in r) / sum(s in r for r in runs) for s in steps
        }
    return out


def table(curves: dict[str, dict[int, float]], fmt: str = "{:.3f}") -> str:
    """Markdown table: one row per evaluated step, one column (a metric) per run."""
    steps = sorted(set().union(*(c.keys() for c in curves.values())))
    lines = ["| step | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for s in steps:
        cells = [fmt.format(c[s]) if s in c else "" for c in curves.values()]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_spread(curves: dict[str, list[dict]]) -> str:
    """Last-step accuracy of every seed, per kind."""
    return "; ".join(
        f"{k}: " + ", ".join(f"{r[max(r)]:.3f}" for r in runs) for k, runs in curves.items()
    )


def plot(path, curves: dict, title: str, ylabel: str = "test accuracy"):
    from dlkit.extras.plotting import line_plots

    series = {k: (sorted(c), [c[s] for s in sorted(c)]) for k, c in curves.items()}
    panel = {"title": title, "xlabel": "step", "ylabel": ylabel, "series": series}
    return line_plots(path, [panel], ncols=1)


def run_all(root, *, smoke: bool, pretrain_steps: int, steps: int, eval_every: int, **flags_):
    """Pre-trains (or resumes), then each 5-9 run per seed: {"pretrain", "curves": {kind: [..]}}."""
    from dlkit.train import train_and_evaluate

    root = pathlib.Path(root)
    if flags_.get("weights"):
        pre = None
    else:
        pre = train_and_evaluate(pretrain_config(smoke, pretrain_steps), root / "pretrain")
    curves = {kind: [] for kind in RUNS}
    for seed in range(flags_["seeds"]):
        for kind in RUNS:
            cfg = task_config(
                kind, smoke, steps, eval_every, root / "pretrain", seed, flags_=flags_
            )
            train_and_evaluate(cfg, root / f"{kind}_s{seed}")
            curves[kind].append(eval_curve(root / f"{kind}_s{seed}"))
    return {"pretrain": pre, "curves": curves}


def text_config(kind: str, smoke: bool, corpus: str, steps: int, eval_every: int, vectors, seed=0):
    """A char_lstm on `corpus` whose embedding starts from `vectors` (word2vec) or at random."""
    from dlkit.train.config import default_config

    c = default_config()
    c.seed = seed
    c.model.name = "char_lstm"
    c.model.num_layers = 1
    c.model.hidden_size, c.model.embed_dim = (16, 8) if smoke else (128, 32)
    c.data.name = corpus
    c.data.seq_len = 16 if smoke else 64
    c.data.train_stride = c.data.seq_len
    c.data.eval_fraction = 0.01 if smoke else 0.02
    c.batch_size = 8 if smoke else 32
    c.eval_batch_size = 64
    c.num_train_steps = steps
    c.log_every_steps = c.eval_every_steps = eval_every
    c.checkpoint.every_steps = steps
    c.progress_bar = False
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.grad_clip_norm = 1.0
    if kind == "word2vec":
        c.transfer.vectors = str(vectors)
    return c


def char_vectors(config, root, *, features: int, steps: int) -> pathlib.Path:
    """Skip-gram vectors of the characters of the training split (held-out text unseen)."""
    import numpy as np

    from dlkit import data
    from dlkit.data.text import tokenizer_from_assets
    from dlkit.data.word2vec import Word2VecData
    from dlkit.extras.word2vec import train_word2vec, word_vectors
    from dlkit.train.embeddings import save_vectors

    out = pathlib.Path(root) / "char_vectors"
    if (out / "vectors.npz").is_file():
        return out / "vectors.npz"
    dataset = data.load(config.data)
    tok = tokenizer_from_assets(dataset.assets)
    ids = np.asarray(dataset.train.ids)
    counts = np.bincount(ids, minlength=tok.vocab_size).astype(np.int64)
    w2v = Word2VecData(tok, ids, counts, window=3, negatives=5, subsample=1e-2)
    state, history = train_word2vec(
        w2v, features=features, batch_size=1024, num_steps=steps, steps_per_call=min(steps, 50)
    )
    print(f"char skip-gram: {steps} steps, final loss {history[-1]['loss']:.4f}")
    words, vectors = word_vectors(state, w2v)
    save_vectors(out, words, vectors, counts)
    return out / "vectors.npz"


def run_text(root, *, smoke, corpus, steps, eval_every, w2v_steps, seeds):
    """Char vectors, then the two LM runs per seed: {kind: [{step: held-out loss}, ...]}."""
    from dlkit.train import train_and_evaluate

    root = pathlib.Path(root)
    base = text_config("random", smoke, corpus, steps, eval_every, None)
    vectors = char_vectors(base, root, features=base.model.embed_dim, steps=w2v_steps)
    curves = {kind: [] for kind in TEXT_RUNS}
    for seed in range(seeds):
        for kind in TEXT_RUNS:
            cfg = text_config(kind, smoke, corpus, steps, eval_every, vectors, seed)
            train_and_evaluate(cfg, root / f"{kind}_s{seed}")
            curves[kind].append(eval_curve(root / f"{kind}_s{seed}", "eval_loss"))
    return curves


def text_main(root, smoke: bool):
    runs = run_text(
        root,
        seeds=1 if smoke else _SEEDS.value,
        smoke=smoke,
        corpus="pydoc" if smoke else _CORPUS.value,
        steps=12 if smoke else _STEPS.value,
        eval_every=4 if smoke else _EVAL_EVERY.value,
        w2v_steps=10 if smoke else _W2V_STEPS.value,
    )
    curves = mean_curves(runs)
    n = len(runs["random"])
    print(f"char_lstm on {_CORPUS.value}, held-out loss (nats/char, mean of {n} seeds) by start:")
    print(table(curves, "{:.4f}"))
    print(
        "last step, per seed: "
        + "; ".join(f"{k}: " + ", ".join(f"{r[max(r)]:.4f}" for r in rs) for k, rs in runs.items())
    )
    png = plot(pathlib.Path(root) / "transfer_text.png", curves, "char LM", "held-out loss")
    print(f"plot: {png}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from dlkit import cli, platform

    cli.show_progress()  # the door: dlkit's progress lines print
    platform.choose_threefry()  # DLKIT_THREEFRY=unrolled: the same bits, faster compiles
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from dlkit.errors import ConfigError

    smoke = _SMOKE.value
    start = time.perf_counter()
    if _TEXT.value:
        try:
            text_main(_WORKDIR.value, smoke)
        except ConfigError as e:
            sys.exit(f"error: {e}")
        print(f"wall_seconds={time.perf_counter() - start:.1f}")
        return
    weights = _WEIGHTS.value
    new_layers = _NEW.value
    if weights and not flags.FLAGS["new_layers"].present:
        new_layers = ["head/.*"]  # the imported model's classifier
    try:
        out = run_all(
            _WORKDIR.value,
            smoke=smoke,
            pretrain_steps=20 if smoke else _PRETRAIN_STEPS.value,
            steps=12 if smoke else _STEPS.value,
            eval_every=4 if smoke else _EVAL_EVERY.value,
            seeds=1 if smoke else _SEEDS.value,
            new_layers=new_layers,
            examples=_EXAMPLES.value,
            backbone_lr_scale=_BACKBONE_LR.value,
            weights=weights,
            convert=_CONVERT.value,
            width=_WIDTH.value,
            image_size=_IMAGE_SIZE.value,
        )
    except ConfigError as e:
        sys.exit(f"error: {e}")
    pre, runs = out["pretrain"], out["curves"]
    curves = mean_curves(runs)
    data = "8x8 digits (smoke)" if smoke else "MNIST shared split"
    if pre is None:
        print(
            f"start: {weights} ({_CONVERT.value} PyTorch layout, ImageNet preprocessing, "
            f"{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}); data {data}"
        )
    else:
        print(f"pre-trained on 0-4 ({data}): test accuracy {pre['eval_accuracy']:.4f}")
    print(f"new layers {new_layers}; backbone lr scale (finetune) {_BACKBONE_LR.value}")
    print(
        f"digits 5-9 from {_EXAMPLES.value} examples, test accuracy "
        f"(mean of {len(runs['scratch'])} seeds):"
    )
    print(table(curves))
    print(f"last step, per seed: {final_spread(runs)}")
    png = plot(
        pathlib.Path(_WORKDIR.value) / "transfer.png",
        curves,
        f"5-9 from {_EXAMPLES.value} examples ({data})",
    )
    print(f"plot: {png}  wall_seconds={time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    app.run(main)
