"""The linear softmax classifier's templates: train logits = W x + b on MNIST (the shared split by
default) from W = 0 through the shared train step, then draw each class's row of W as an image.

  python experiments/linear_templates.py --workdir=workdirs/linear_templates
"""

import json
import pathlib

import numpy as np
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/linear_templates", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Registered image dataset (mnist, digits).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "MNIST idx directory (default: shared data).")
_OPT = flags.DEFINE_string("optimizer", "sgd", "dlkit.train optimizer name.")
_LR = flags.DEFINE_float("learning_rate", 0.1, "Learning rate.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Mini-batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Shuffling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests: 30 steps.")


def train(dataset, steps: int):
    """Softmax regression from W = 0, b = 0; returns the final TrainState."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from dlkit import data, models
    from dlkit.train import create_train_state, make_optimizer, make_steps, objectives

    model = models.get("linear", num_classes=dataset.num_classes)
    x0 = jnp.asarray(dataset.example_batch(1)["inputs"])
    params = jax.tree.map(jnp.zeros_like, model.init(jax.random.PRNGKey(0), x0)["params"])
    tx = make_optimizer(
        ml_collections.ConfigDict({"name": _OPT.value, "learning_rate": _LR.value}), steps
    )
    state = create_train_state(model, tx, x0, _SEED.value, params=params)
    train_fn, _ = make_steps(objectives.get("cross_entropy"))
    it = data.train_iterator(dataset, _BATCH.value, _SEED.value)
    for _ in range(steps):
        state, _ = train_fn(state, next(it))
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
    import ml_collections

    from dlkit import ConfigError, data, plotting

    workdir = pathlib.Path(_WORKDIR.value)
    try:
        dataset = data.load(
            ml_collections.ConfigDict({"name": _DATASET.value, "dir": _DATA_DIR.value})
        )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    steps = 30 if _SMOKE.value else _STEPS.value
    state = train(dataset, steps)
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
    app.run(main)
