"""Batch GD, SGD (batch 1), mini-batch SGD, momentum and Adam (optax's and from scratch) on the
same model, data and initial weights, through the shared train step; loss against steps and
against wall-clock (PNGs) and a table (final loss, accuracy, time) in --workdir.

  python experiments/compare_optimizers.py --workdir=workdirs/optimizers
"""

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from dlkit import cli, data, errors, models
from dlkit.extras import plotting, short_runs
from dlkit.train.state import init_variables

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/compare_optimizers", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Registered dataset (digits, mnist).")
_HIDDEN = flags.DEFINE_list("hidden_sizes", ["64"], "MLP hidden widths.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Optimizer steps per run.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 25, "Full training-set loss every this many steps."
)
_RUNS = flags.DEFINE_list(
    "runs", ["gd", "sgd1", "minibatch", "momentum", "adam", "adam_scratch"], "Runs (see RUNS)."
)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Mini-batch size of the mini-batch runs.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests: 12 steps, hidden (8,).")

# key -> (label, batch size: 0 = whole training set, None = --batch_size; optimizer settings)
RUNS = {
    "gd": ("batch GD", 0, {"name": "sgd", "learning_rate": 0.5}),
    "sgd1": ("SGD (batch 1)", 1, {"name": "sgd", "learning_rate": 0.05}),
    "minibatch": ("mini-batch SGD", None, {"name": "sgd", "learning_rate": 0.2}),
    "momentum": (
        "momentum 0.9",
        None,
        {"name": "momentum", "learning_rate": 0.02, "momentum": 0.9},
    ),
    "adam": ("Adam", None, {"name": "adam", "learning_rate": 3e-3}),
    "adam_scratch": ("Adam (from scratch)", None, {"name": "adam_scratch", "learning_rate": 3e-3}),
    "sgd_scratch": (
        "mini-batch SGD (from scratch)",
        None,
        {"name": "sgd_scratch", "learning_rate": 0.2},
    ),
}


def train_arrays(dataset) -> dict:
    """The whole preprocessed training split as numpy arrays (inputs, targets, mask of ones)."""
    return data.eval_batches(dataset, len(dataset.train), split="train")[0]


def batches(arrays: dict, batch_size: int, seed: int):
    """Endless batches: reshuffled each epoch; batch_size 0 yields the whole set every step."""
    n = len(arrays["targets"])
    if batch_size == 0:
        while True:
            yield arrays
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in arrays.items()}


def run_one(key, model, params, arrays, eval_train, eval_test, steps, eval_every, seed, bs):
    """Trains one run from the shared initial params; returns its curves and summary."""
    label, batch_size, opt = RUNS[key]
    batch_size = bs if batch_size is None else batch_size
    curve = {"step": [], "seconds": [], "loss": []}
    clock = {"elapsed": 0.0, "start": 0.0}

    def watch(step, state, _):  # the clock runs over steps and batch slicing, not evals
        if step and step % eval_every and step != steps:
            return False
        if step:
            jax.block_until_ready(state)
            clock["elapsed"] += time.perf_counter() - clock["start"]
        curve["step"].append(step)
        curve["seconds"].append(clock["elapsed"])
        curve["loss"].append(short_runs.evaluate_on(state, eval_train)["loss"])
        clock["start"] = time.perf_counter()
        return False

    stream = batches(arrays, batch_size, seed)
    state, _ = short_runs.run_steps(
        model, params, opt, stream, steps, seed=seed, watch=watch, compile_first=True
    )
    test = short_runs.evaluate_on(state, eval_test)
    n = batch_size or len(arrays["targets"])
    elapsed = clock["elapsed"]
    return (
        label,
        curve,
        {
            "optimizer": label,
            "batch size": n,
            "rule": opt["name"],
            "lr": opt["learning_rate"],
            "steps": steps,
            "examples seen": steps * n,
            "final train loss": curve["loss"][-1],
            "test accuracy": test["accuracy"],
            "train time (s)": elapsed,
            "ms / step": 1e3 * elapsed / steps,
        },
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for r in _RUNS.value:
        errors.choose(RUNS, r, "run")
    smoke = _SMOKE.value
    steps, eval_every = (12, 4) if smoke else (_STEPS.value, _EVAL_EVERY.value)
    hidden = (8,) if smoke else tuple(int(h) for h in _HIDDEN.value)
    workdir = pathlib.Path(_WORKDIR.value)
    dataset = data.load(ml_collections.ConfigDict({"name": _DATASET.value}))
    arrays = train_arrays(dataset)
    eval_train = data.eval_batches(dataset, 512, split="train")
    eval_test = data.eval_batches(dataset, 512)
    model = models.get("mlp", num_classes=dataset.num_classes, hidden_sizes=hidden)
    params, _ = init_variables(model, arrays["inputs"][:1], _SEED.value)  # shared by every run
    curves, rows = {}, []
    for key in _RUNS.value:
        label, curve, row = run_one(
            key,
            model,
            params,
            arrays,
            eval_train,
            eval_test,
            steps,
            eval_every,
            _SEED.value,
            _BATCH.value,
        )
        curves[label], rows = curve, [*rows, row]
        print(
            f"{label:32s} loss {row['final train loss']:.4f}  acc {row['test accuracy']:.4f}  "
            f"{row['train time (s)']:.2f}s",
            flush=True,
        )
    title = f"MLP {hidden} on {dataset.name}: training-set loss"
    panels = [
        {
            "title": "loss vs steps",
            "xlabel": "step",
            "ylabel": "train loss",
            "logy": True,
            "series": {k: (c["step"], c["loss"]) for k, c in curves.items()},
        },
        {
            "title": "loss vs wall-clock",
            "xlabel": "seconds (training only)",
            "ylabel": "train loss",
            "logy": True,
            "series": {k: (c["seconds"], c["loss"]) for k, c in curves.items()},
        },
    ]
    plotting.line_plots(workdir / "optimizers.png", panels, title=title)
    print(plotting.write_table(workdir / "table.md", rows, title=title))
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "curves": curves}, indent=1))


if __name__ == "__main__":
    cli.run(main)
