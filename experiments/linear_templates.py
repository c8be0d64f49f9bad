"""The linear softmax classifier's templates: train logits = W x + b on MNIST (the shared split by
default) from W = 0 through the shared train step, then draw each class's row of W as an image.

  python experiments/linear_templates.py --workdir=workdirs/linear_templates
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from dlkit import cli, data, models
from dlkit.extras import plotting, short_runs

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/linear_templates", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Registered image dataset (mnist, digits).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "MNIST idx directory (default: shared data).")
_OPT = flags.DEFINE_string("optimizer", "sgd", "dlkit.train optimizer name.")
_LR = flags.DEFINE_float("learning_rate", 0.1, "Learning rate.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Mini-batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Shuffling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests: 30 steps.")


def train(dataset, steps: int, settings: dict):
    """Softmax regression from W = 0, b = 0; returns the final TrainState.
    settings: {"optimizer", "learning_rate", "batch_size", "seed"} from the flags."""
    model = models.get("linear", num_classes=dataset.num_classes)
    x0 = jnp.asarray(dataset.example_batch(1)["inputs"])
    params = jax.tree.map(jnp.zeros_like, model.init(jax.random.PRNGKey(0), x0)["params"])
    state, _ = short_runs.run_steps(
        model,
        params,
        {"name": settings["optimizer"], "learning_rate": settings["learning_rate"]},
        data.train_iterator(dataset, settings["batch_size"], settings["seed"]),
        steps,
        seed=settings["seed"],
    )
    return state


def per_class_accuracy(state, batches, num_classes: int) -> tuple[np.ndarray, float]:
    """(accuracy of each true class (C,), overall accuracy) on padded, masked batches."""
    right, total = np.zeros(num_classes), np.zeros(num_classes)
    for b in batches:
        pred = np.asarray(state.apply_fn(state.variables(), b["inputs"], train=False)).argmax(-1)
        keep = b["mask"] > 0
        np.add.at(total, b["targets"][keep], 1)
        np.add.at(right, b["targets"][keep], pred[keep] == b["targets"][keep])
    return right / np.maximum(total, 1), float(right.sum() / total.sum())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = pathlib.Path(_WORKDIR.value)
    dataset = data.load(ml_collections.ConfigDict({"name": _DATASET.value, "dir": _DATA_DIR.value}))
    steps = 30 if _SMOKE.value else _STEPS.value
    settings = {"optimizer": _OPT.value, "learning_rate": _LR.value}
    state = train(dataset, steps, settings | {"batch_size": _BATCH.value, "seed": _SEED.value})
    acc, overall = per_class_accuracy(state, data.eval_batches(dataset, 500), dataset.num_classes)
    shape = dataset.example_batch(1)["inputs"].shape[1:3]  # (H, W)
    w = np.asarray(state.params["head"]["kernel"])  # (H W C, classes): column c is row c of W
    templates = w.T.reshape(dataset.num_classes, *shape, -1).mean(-1)  # (classes, H, W)
    titles = [f"{c}: {a:.0%}" for c, a in enumerate(acc)]
    plotting.image_grid(workdir / "templates.png", templates, titles, ncols=5)
    rows = [
        {
            "class": c,
            "test accuracy": float(a),
            "template min": float(templates[c].min()),
            "template max": float(templates[c].max()),
        }
        for c, a in enumerate(acc)
    ]
    rows.append(
        {
            "class": "all",
            "test accuracy": overall,
            "template min": float(templates.min()),
            "template max": float(templates.max()),
        }
    )
    title = f"linear softmax classifier on {dataset.name}, {steps} {_OPT.value} steps"
    print(plotting.write_table(workdir / "table.md", rows, title=title))
    np.save(workdir / "templates.npy", templates)
    (workdir / "results.json").write_text(json.dumps({"accuracy": overall, "rows": rows}))


if __name__ == "__main__":
    cli.run(main)
