"""A learning-rate sweep of plain SGD: slow convergence at a small rate, divergence at a large one.

A run is stopped and reported as diverged at the first step whose batch loss is not finite or
exceeds --divergence_factor times the initial loss; its curve ends there with a cross, never NaN.

  python experiments/lr_sweep.py --workdir=workdirs/lr_sweep
"""

import json
import math
import pathlib

import ml_collections
from absl import app, flags

from dlkit import cli, data, models
from dlkit.extras import plotting, short_runs
from dlkit.train.state import init_variables

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/lr_sweep", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Registered dataset (digits, mnist).")
_HIDDEN = flags.DEFINE_list("hidden_sizes", ["64"], "MLP hidden widths.")
_RATES = flags.DEFINE_list("learning_rates", ["0.001", "0.01", "0.1", "1", "10"], "SGD rates.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "sgd", "dlkit.train optimizer name.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Steps per rate.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Mini-batch size.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 20, "Full training-set loss every this many steps."
)
_FACTOR = flags.DEFINE_float("divergence_factor", 3.0, "Diverged: loss > factor * initial loss.")
_SLOW = flags.DEFINE_float("slow_fraction", 0.5, "Slow: final loss > this fraction of the start.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for tests: 20 steps, rates 0.1 and 100.")


def sweep_one(lr, model, params, dataset, eval_train, steps, eval_every, factor, settings):
    """Trains at rate lr; returns (curve, diverged_at or None, loss at divergence or None).
    settings: {"optimizer", "batch_size", "seed"} from the flags."""
    curve, limit, bad = {"step": [], "loss": []}, [math.inf], [None]

    def watch(step, state, sums):  # stop at a batch or training-set loss above the limit
        if sums is not None:
            bad[0] = float(sums["loss"] / sums["count"])
            if not math.isfinite(bad[0]) or bad[0] > limit[0]:
                return True
        if step % eval_every and step != steps:
            return False
        bad[0] = short_runs.evaluate_on(state, eval_train)["loss"]
        if step and (not math.isfinite(bad[0]) or bad[0] > limit[0]):
            return True
        curve["step"].append(step)
        curve["loss"].append(bad[0])
        limit[0] = factor * curve["loss"][0]
        return False

    _, at = short_runs.run_steps(
        model,
        params,
        {"name": settings["optimizer"], "learning_rate": lr},
        data.train_iterator(dataset, settings["batch_size"], settings["seed"]),
        steps,
        seed=settings["seed"],
        watch=watch,
    )
    return curve, at, None if at is None else bad[0]


def status(curve, diverged_at, loss_there, slow_fraction) -> str:
    """A one-line verdict: diverged (where, at what loss), slow, or converged."""
    if diverged_at is not None:
        return f"diverged at step {diverged_at} (loss {loss_there:.3g})"
    drop = curve["loss"][-1] / curve["loss"][0]
    return f"slow (loss still {drop:.0%} of its start)" if drop > slow_fraction else "converged"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    smoke = _SMOKE.value
    settings = {"optimizer": _OPTIMIZER.value, "batch_size": _BATCH.value, "seed": _SEED.value}
    rates = [0.1, 100.0] if smoke else [float(r) for r in _RATES.value]
    steps, eval_every = (20, 5) if smoke else (_STEPS.value, _EVAL_EVERY.value)
    hidden = (8,) if smoke else tuple(int(h) for h in _HIDDEN.value)
    workdir = pathlib.Path(_WORKDIR.value)
    dataset = data.load(ml_collections.ConfigDict({"name": _DATASET.value}))
    eval_train = data.eval_batches(dataset, 512, split="train")
    model = models.get("mlp", num_classes=dataset.num_classes, hidden_sizes=hidden)
    params, _ = init_variables(model, dataset.example_batch(1)["inputs"], _SEED.value)
    series, marks, rows, results = {}, {}, [], []
    for lr in rates:
        curve, at, there = sweep_one(
            lr, model, params, dataset, eval_train, steps, eval_every, _FACTOR.value, settings
        )
        verdict = status(curve, at, there, _SLOW.value)
        steps_shown, losses_shown = list(curve["step"]), list(curve["loss"])
        if at is not None:  # the curve ends at the divergence, drawn finite (capped), with a cross
            shown = there if math.isfinite(there) else _FACTOR.value * curve["loss"][0]
            marks[f"lr {lr:g} diverged"] = (at, shown)
            steps_shown, losses_shown = [*steps_shown, at], [*losses_shown, shown]
        series[f"lr {lr:g}"] = (steps_shown, losses_shown)
        rows.append(
            {
                "learning rate": lr,
                "steps run": at or steps,
                "start loss": curve["loss"][0],
                "last finite loss": curve["loss"][-1],
                "verdict": verdict,
            }
        )
        results.append({**rows[-1], "diverged": at is not None, "curve": curve})
        print(f"lr {lr:<8g} {verdict}", flush=True)
    title = f"{_OPTIMIZER.value} on {dataset.name}, MLP {hidden}: learning-rate sweep"
    finite = [r for r in rows if not r["verdict"].startswith("diverged")]
    panels = [
        {
            "title": "training-set loss",
            "xlabel": "step",
            "ylabel": "loss",
            "logy": True,
            "series": series,
            "marks": marks,
        },
        {
            "title": "last loss against rate (x: diverged)",
            "xlabel": "learning rate",
            "ylabel": "loss",
            "logx": True,
            "logy": True,
            "series": {
                "finished": (
                    [r["learning rate"] for r in finite],
                    [r["last finite loss"] for r in finite],
                )
            },
            "marks": {
                f"lr {r['learning rate']:g} diverged": (
                    r["learning rate"],
                    series[f"lr {r['learning rate']:g}"][1][-1],
                )
                for r in rows
                if r["verdict"].startswith("diverged")
            },
        },
    ]
    plotting.line_plots(workdir / "lr_sweep.png", panels, title=title)
    print(plotting.write_table(workdir / "table.md", rows, title=title))
    (workdir / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    cli.run(main)
