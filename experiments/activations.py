"""Activations in a deep MLP: per-layer gradient norms ||dL/dW_l|| at initialisation and during
training for sigmoid, tanh and ReLU (vanishing gradients with sigmoid), and the fraction of dead
ReLU units (z <= 0 on every probe example) over training. Gradients come from the hand-written
backprop (dlkit.ops.backprop); training goes through the shared train step.

  python experiments/activations.py --workdir=workdirs/activations
"""

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from dlkit import cli, data, models
from dlkit.extras import plotting, short_runs
from dlkit.ops import backprop
from dlkit.train.state import init_variables

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/activations", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Registered dataset (digits, mnist).")
_DEPTH = flags.DEFINE_integer("depth", 20, "Hidden layers (plus the output layer).")
_WIDTH = flags.DEFINE_integer("width", 64, "Units per hidden layer.")
_ACTS = flags.DEFINE_list("activations", ["sigmoid", "tanh", "relu"], "Activations to compare.")
_OPT = flags.DEFINE_string("optimizer", "momentum", "dlkit.train optimizer name.")
_LR = flags.DEFINE_float("learning_rate", 0.003, "Learning rate of every run.")
_HIGH_LR = flags.DEFINE_float("high_lr", 0.5, "An extra ReLU run at this rate (0: none).")
_HIGH_OPT = flags.DEFINE_string("high_lr_optimizer", "sgd", "Optimizer of the extra ReLU run.")
_HE = flags.DEFINE_bool("he_init", True, "ReLU kernels scaled by sqrt(2) (He); else LeCun.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps per run.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Mini-batch size.")
_EVERY = flags.DEFINE_integer("snapshot_every", 50, "Gradient norms every this many steps.")
_PROBE = flags.DEFINE_integer("probe_size", 512, "Training examples used for gradient norms.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests: depth 6, 20 steps.")


def snapshot(params, probe, activation) -> dict:
    """Loss, per-layer ||dL/dW_l|| and the dead-unit fraction on the probe batch."""
    loss, norms, dead = _probe_stats(params, probe["inputs"], probe["targets"], activation)
    return {"loss": float(loss), "norms": [float(n) for n in norms], "dead": float(dead)}


@functools.partial(jax.jit, static_argnums=3)
def _probe_stats(params, x, y, activation):
    """(loss, ||dW_l|| per layer (L,), fraction of hidden units with z <= 0 on every example)."""
    loss, grads = backprop.mlp_value_and_grad(params, x, y, activation)
    norms = jnp.stack([jnp.linalg.norm(grads[n]["kernel"]) for n in backprop.layer_names(params)])
    _, cache = backprop.mlp_forward(params, x, activation)
    dead = jnp.concatenate([jnp.all(z <= 0, axis=0) for _, z in cache[:-1]])  # hidden units
    return loss, norms, jnp.mean(dead.astype(jnp.float32))


def he_scaled(params, activation: str, he_init: bool):
    """ReLU with he_init: hidden kernels scaled by sqrt(2) (LeCun var 1/n -> He var 2/n)."""
    if activation != "relu" or not he_init:
        return params
    return {
        k: {**v, "kernel": v["kernel"] * math.sqrt(2.0)} if k != "head" else v
        for k, v in params.items()
    }


def run(activation, opt, lr, params, dataset, probe, test, steps, every, depth, width, settings):
    """Trains one deep MLP; returns its snapshots {"step", "loss", "norms", "dead"}, the test
    accuracy and the step where the loss stopped being finite (None if it never did).
    settings: {"seed", "batch_size", "he_init"} from the flags."""
    model = models.get(
        "mlp", num_classes=dataset.num_classes, hidden_sizes=(width,) * depth, activation=activation
    )
    snaps = []

    def watch(step, state, _):  # a snapshot every `every` steps; stop once it is not finite
        if step % every and step != steps:
            return False
        snap = snapshot(jax.device_get(state.params), probe, activation)
        if not all(map(math.isfinite, [snap["loss"], *snap["norms"]])):
            return True
        snaps.append({"step": step, **snap})
        return False

    state, diverged = short_runs.run_steps(
        model,
        he_scaled(params, activation, settings["he_init"]),
        {"name": opt, "learning_rate": lr},
        data.train_iterator(dataset, settings["batch_size"], settings["seed"]),
        steps,
        seed=settings["seed"],
        watch=watch,
    )
    return snaps, short_runs.evaluate_on(state, test)["accuracy"], diverged


def table_row(label, activation, snaps, acc, diverged) -> dict:
    """One table row: gradient ratios at init and at the last finite snapshot, loss, dead units."""
    first, last = snaps[0], snaps[-1]
    relu = activation == "relu"
    return {
        "run": label,
        "norm dW_1 / norm dW_L at init": ratio(first["norms"]),
        "norm dW_1 / norm dW_L at end": ratio(last["norms"]),
        "norm dW_1 at init": first["norms"][0],
        "last train loss": last["loss"],
        "test accuracy": acc,
        "dead ReLU at init": first["dead"] if relu else "-",
        "dead ReLU at end": last["dead"] if relu else "-",
        "status": "trained"
        if diverged is None
        else f"diverged (loss not finite at step {diverged})",
    }


def ratio(norms) -> float:
    """||dW_1|| / ||dW_L||: how much smaller the first layer's gradient is than the last's."""
    return norms[0] / norms[-1] if norms[-1] else "all 0 (dead)"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    smoke = _SMOKE.value
    settings = {"seed": _SEED.value, "batch_size": _BATCH.value, "he_init": _HE.value}
    depth, width = (6, 16) if smoke else (_DEPTH.value, _WIDTH.value)
    steps, every = (20, 10) if smoke else (_STEPS.value, _EVERY.value)
    workdir = pathlib.Path(_WORKDIR.value)
    dataset = data.load(ml_collections.ConfigDict({"name": _DATASET.value}))
    probe = data.eval_batches(dataset, min(_PROBE.value, len(dataset.train)), split="train")[0]
    test = data.eval_batches(dataset, 512)
    acts = ["sigmoid", "relu"] if smoke else _ACTS.value
    runs = [(a, _OPT.value, _LR.value) for a in acts]
    if _HIGH_LR.value and "relu" in acts and not smoke:
        runs.append(("relu", _HIGH_OPT.value, _HIGH_LR.value))
    model = models.get("mlp", num_classes=dataset.num_classes, hidden_sizes=(width,) * depth)
    params, _ = init_variables(model, probe["inputs"][:1], _SEED.value)  # the same for every run
    results, rows = {}, []
    for activation, opt, lr in runs:
        label = f"{activation} {opt} lr {lr:g}"
        args = (params, dataset, probe, test, steps, every, depth, width, settings)
        snaps, acc, diverged = run(activation, opt, lr, *args)
        if not snaps:
            print(f"{label}: the loss is not finite at initialisation; left out", flush=True)
            continue
        results[label] = snaps
        rows.append(table_row(label, activation, snaps, acc, diverged))
        print(
            " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()
            ),
            flush=True,
        )
    write_outputs(workdir, results, rows, depth, width, steps)


def write_outputs(workdir, results, rows, depth, width, steps):
    """grad_norms.png (init, middle, end), training.png (loss, dead ReLU), table.md + json"""
    layers = list(range(1, depth + 2))
    snaps0 = next(iter(results.values()))
    mid = snaps0[len(snaps0) // 2]["step"]

    def norms_at(step, title):  # runs that diverged before `step` are left out
        return {
            "title": title,
            "xlabel": "layer (1 = input side)",
            "ylabel": "||dL/dW_l||",
            "logy": True,
            "series": {
                k: (layers, x["norms"]) for k, s in results.items() for x in s if x["step"] == step
            },
        }

    name = f"{depth}-hidden-layer MLP (width {width})"
    plotting.line_plots(
        workdir / "grad_norms.png",
        [
            norms_at(0, "at initialisation"),
            norms_at(mid, f"after {mid} steps"),
            norms_at(steps, f"after {steps} steps"),
        ],
        ncols=3,
        title=f"{name}: per-layer gradient norms",
    )
    relu = {k: s for k, s in results.items() if k.startswith("relu")}
    panels = [
        {
            "title": "probe loss",
            "xlabel": "step",
            "ylabel": "loss",
            "logy": True,
            "series": {
                k: ([x["step"] for x in s], [x["loss"] for x in s]) for k, s in results.items()
            },
        }
    ]
    if relu:
        panels.append(
            {
                "title": "dead ReLU units (z <= 0 on every probe example)",
                "xlabel": "step",
                "ylabel": "fraction of hidden units",
                "series": {
                    k: ([x["step"] for x in s], [x["dead"] for x in s]) for k, s in relu.items()
                },
            }
        )
    plotting.line_plots(workdir / "training.png", panels, title=f"{name}: training")
    print(plotting.write_table(workdir / "table.md", rows, title=f"{name}: activations"))
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))


if __name__ == "__main__":
    cli.run(main)
