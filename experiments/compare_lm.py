"""Language models at equal wall-clock: held-out loss of each config after the same training time.

  python experiments/compare_lm.py --budget_seconds=300 --set=model.dropout_rate=0.0 \
      --configs=transformer_lm_shakespeare,char_lstm_pydoc --workdir=workdirs/compare_lm

Every config trains on the first config's data section (same corpus, windows and held-out split).
First every model's step time is measured (after compilation) in interleaved rounds, keeping
each model's fastest round, so that a machine shared with other jobs slows all models alike;
each num_train_steps is then budget / step time, so the learning-rate schedule spans the budget.
Prints a markdown table with the step time, steps, the whole run's wall time (data, compilation
and evaluation included), held-out loss (nats/char) and bits per character.
"""

import ast
import importlib.util
import pathlib
import sys
import time

import jax
from absl import app, flags, logging

from dlkit import data, platform
from dlkit.errors import ConfigError
from dlkit.train import (
    build_model,
    cpu_layout,
    create_state,
    objectives,
    restore_latest,
    train_and_evaluate,
)
from dlkit.train.config import validate
from dlkit.train.runner import Runner

_CONFIGS = flags.DEFINE_list(
    "configs", ["transformer_lm_shakespeare", "char_lstm_pydoc"], "Config names in configs/."
)
_BUDGET = flags.DEFINE_float("budget_seconds", 300.0, "Training time per model.")
_CALIBRATION = flags.DEFINE_integer("calibration_steps", 5, "Timed steps per calibration round.")
_ROUNDS = flags.DEFINE_integer("calibration_rounds", 3, "Interleaved calibration rounds.")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/compare_lm", "One subdirectory per config.")
_OVERRIDES = flags.DEFINE_multi_string(
    "set", [], "key=value applied to every config, e.g. --set=data.path=/x/input.txt"
)

_HERE = pathlib.Path(__file__).resolve().parent


def load_config(name: str):
    """get_config() of experiments/configs/<name>.py."""
    path = _HERE / "configs" / f"{name}.py"
    if not path.exists():
        raise ConfigError(f"no config {path}; choose files in {path.parent}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def apply_overrides(config, overrides):
    """Sets dotted keys from "key=value" strings (values parsed as Python literals if possible)."""
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value


def stepper(options, dataset):
    """A function timing n training steps of a run, laid out as the training loop lays it out
    (CPU devices, steps_per_call); compiled on creation."""
    objective = objectives.get(options.loss)
    init = lambda: create_state(options, dataset, build_model(options, dataset))  # noqa: E731
    layout = cpu_layout.decide(options, objective, init, dataset.example_batch(options.batch_size))
    runner = Runner.create(options, objective, devices=layout.devices)
    state = runner.place(init())
    k = options.parallel.steps_per_call
    it = data.train_iterator(dataset, options.batch_size, options.seed)
    box = [state]

    def dispatch():
        box[0], sums = runner.train(box[0], [next(it) for _ in range(k)])  # data cost counts
        return sums

    jax.block_until_ready(dispatch())

    def seconds_per_step(n: int) -> float:
        calls = max(1, n // k)
        start = time.perf_counter()
        for _ in range(calls):
            sums = dispatch()
        jax.block_until_ready(sums)
        return (time.perf_counter() - start) / (calls * k)

    return seconds_per_step


def calibrate(configs, datasets, steps: int, rounds: int) -> list[float]:
    """Fastest seconds per step of each config over interleaved rounds."""
    timers = [stepper(validate(c), d) for c, d in zip(configs, datasets, strict=True)]
    best = [float("inf")] * len(timers)
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer(steps))
    return best


def prepare(name, data_section, overrides):
    """(config with the shared data section and the overrides, its dataset)."""
    config = load_config(name)
    config.data = data_section
    apply_overrides(config, overrides)
    config.progress_bar = False
    return config, data.load(config.data)


def run_one(name, config, per_step, budget, workdir):
    """Trains one config for ~budget seconds; returns a row of the table."""
    steps = max(1, int(budget / per_step))
    config.num_train_steps = steps
    config.eval_every_steps = config.checkpoint.every_steps = steps
    config.log_every_steps = max(1, steps // 5)
    start = time.perf_counter()
    metrics = train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    params = _count_params(workdir)
    return {
        "config": name,
        "model": config.model.name,
        "params": params,
        "step_s": per_step,
        "steps": steps,
        "wall_s": wall,
        "eval_loss": metrics["eval_loss"],
        "eval_bits": metrics.get("eval_bits", metrics["eval_loss"] / 0.6931471805599453),
    }


def _count_params(workdir) -> int:

    state = restore_latest(workdir, items=("state",))["state"]
    return int(sum(x.size for x in jax.tree.leaves(state["params"])))


def table(rows) -> str:
    lines = [
        "| config | model | params | s/step | steps | wall s (all) | held-out loss | bits/char |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['model']} | {r['params']:,} | {r['step_s']:.3f} | {r['steps']} "
            f"| {r['wall_s']:.0f} | {r['eval_loss']:.4f} | {r['eval_bits']:.3f} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from dlkit import cli

    cli.show_progress()  # the door: dlkit's progress lines print
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)

    try:
        first = load_config(_CONFIGS.value[0])
        apply_overrides(first, _OVERRIDES.value)
        workdirs = [pathlib.Path(_WORKDIR.value) / name for name in _CONFIGS.value]
        for workdir in workdirs:
            if workdir.exists() and any(workdir.iterdir()):
                raise ConfigError(
                    f"{workdir} is not empty (a resumed run would not be timed); "
                    "use a new --workdir"
                )
        configs = [load_config(n) for n in _CONFIGS.value]
        for c in configs:
            apply_overrides(c, _OVERRIDES.value)
        host = platform.configure(*(validate(c).parallel.cpu_devices for c in configs))
        print(f"dlkit platform: {host.describe()}", flush=True)  # before JAX starts
        configs, datasets = zip(
            *(prepare(n, first.data, _OVERRIDES.value) for n in _CONFIGS.value), strict=True
        )
        per_step = calibrate(configs, datasets, _CALIBRATION.value, _ROUNDS.value)
        rows = []
        for name, config, sec, workdir in zip(
            _CONFIGS.value, configs, per_step, workdirs, strict=True
        ):
            rows.append(run_one(name, config, sec, _BUDGET.value, workdir))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(
        f"\nEqual wall-clock budget {_BUDGET.value:.0f} s per model, data {first.data.name}, "
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}"
    )
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
