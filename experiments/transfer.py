"""What pre-training buys: pre-train the `cnn` on MNIST digits 0-4 (the shared split), then learn
digits 5-9 from 100 labelled examples three ways (frozen backbone + new head, full fine-tuning,
from scratch); prints test accuracy against steps as a table and saves transfer.png.

  python experiments/transfer.py --workdir=workdirs/transfer
  python experiments/transfer.py --smoke --workdir=/tmp/transfer_smoke   # tiny cnn on 8x8 digits

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
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the three 5-9 runs (and their 100 examples).")

RUNS = ("frozen", "finetune", "scratch")


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
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = max(steps // 4, 1)
    return c


def task_config(kind: str, smoke: bool, steps: int, eval_every: int, pretrained, *, flags_):
    """Digits 5-9 (relabelled 0-4) from `examples` training images; kind: frozen|finetune|scratch."""
    c = base_config(smoke)
    c.seed = flags_["seed"]
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.num_train_examples = flags_["examples"]
    c.data.subset_seed = flags_["seed"]
    c.num_train_steps = steps
    c.log_every_steps = c.eval_every_steps = eval_every
    c.checkpoint_every_steps = steps
    if kind != "scratch":
        c.init_from = str(pretrained)
        c.init_skip = ("head/.*",)  # a new 5-way head
    if kind == "frozen":
        c.freeze = ("conv_.*", "dense_.*")  # everything but the head
    if kind == "finetune":
        c.backbone_lr_scale = flags_["backbone_lr_scale"]
    return c


def eval_curve(workdir) -> dict[int, float]:
    """{step: eval_accuracy} from a run's metrics.jsonl."""
    curve = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval_accuracy" in row:
            curve[int(row["step"])] = float(row["eval_accuracy"])
    return curve


def table(curves: dict[str, dict[int, float]]) -> str:
    """Markdown table: one row per evaluated step, one column of test accuracy per run."""
    steps = sorted(set().union(*(c.keys() for c in curves.values())))
    lines = ["| step | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for s in steps:
        cells = [f"{c[s]:.3f}" if s in c else "" for c in curves.values()]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path, curves: dict, title: str):
    from dlkit.plotting import line_plots

    series = {k: (sorted(c), [c[s] for s in sorted(c)]) for k, c in curves.items()}
    panel = {"title": title, "xlabel": "step", "ylabel": "test accuracy", "series": series}
    return line_plots(path, [panel], ncols=1)


def run_all(root, *, smoke: bool, pretrain_steps: int, steps: int, eval_every: int, **flags_):
    """Pre-trains (or resumes), runs the three 5-9 runs; returns {"pretrain": .., run: curve}."""
    from dlkit.train import train_and_evaluate

    root = pathlib.Path(root)
    pre = train_and_evaluate(pretrain_config(smoke, pretrain_steps), root / "pretrain")
    curves = {}
    for kind in RUNS:
        cfg = task_config(kind, smoke, steps, eval_every, root / "pretrain", flags_=flags_)
        train_and_evaluate(cfg, root / kind)
        curves[kind] = eval_curve(root / kind)
    return {"pretrain": pre, "curves": curves}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from dlkit.errors import ConfigError

    smoke = _SMOKE.value
    start = time.perf_counter()
    try:
        out = run_all(
            _WORKDIR.value,
            smoke=smoke,
            pretrain_steps=20 if smoke else _PRETRAIN_STEPS.value,
            steps=12 if smoke else _STEPS.value,
            eval_every=4 if smoke else _EVAL_EVERY.value,
            seed=_SEED.value,
            examples=_EXAMPLES.value,
            backbone_lr_scale=_BACKBONE_LR.value,
        )
    except ConfigError as e:
        sys.exit(f"error: {e}")
    pre, curves = out["pretrain"], out["curves"]
    data = "8x8 digits (smoke)" if smoke else "MNIST shared split"
    print(f"pre-trained on 0-4 ({data}): test accuracy {pre['eval_accuracy']:.4f}")
    print(f"digits 5-9 from {_EXAMPLES.value} examples, test accuracy:")
    print(table(curves))
    png = plot(
        pathlib.Path(_WORKDIR.value) / "transfer.png",
        curves,
        f"5-9 from {_EXAMPLES.value} examples ({data})",
    )
    print(f"plot: {png}  wall_seconds={time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    app.run(main)
