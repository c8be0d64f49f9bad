"""train_and_evaluate: the one training loop, with periodic evaluation and exact resume."""

import logging
import pathlib

import jax
import jax.numpy as jnp

from dlkit import data, models
from dlkit.train import objectives, transfer
from dlkit.train.checkpoint import Checkpointer
from dlkit.train.config import validate
from dlkit.train.metrics import MetricWriter, Progress
from dlkit.train.optim import make_optimizer
from dlkit.train.parallel import Runner, ensemble_state, initialize_distributed, steps_this_call
from dlkit.train.state import TrainState, create_train_state
from dlkit.train.step import evaluate

log = logging.getLogger("dlkit")


def build_model(config, dataset):
    """The registry model named by config.model.name; num_classes defaults to the dataset's."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    kwargs.setdefault("num_classes", dataset.num_classes)
    return models.get(config.model.name, **kwargs)


def create_state(config, dataset, model) -> TrainState:
    """A fresh step-0 state: model.init on one example batch, optimizer from config."""
    tx = transfer.wrap_optimizer(config, make_optimizer(config.optimizer, config.num_train_steps))
    inputs = jnp.asarray(dataset.example_batch(1)["inputs"])
    state = create_train_state(model, tx, inputs, config.seed)
    return transfer.prepare_state(config, state, dataset)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)
    log.info(message)


def train_and_evaluate(config, workdir, *, stop_after_step: int | None = None) -> dict:
    """Trains config.model on config.data for config.num_train_steps; returns the final metrics.

    `stop_after_step` ends this invocation early (after saving a checkpoint there), as if the
    run were stopped; rerunning the same config in the same workdir continues exactly.
    """
    validate(config)  # sizes and counts, before any work
    workdir = pathlib.Path(workdir)
    initialize_distributed(config.get("parallel"))  # multi-host: before any computation
    dataset = data.load(config.data)
    model = build_model(config, dataset)
    objective = objectives.get(config.loss)
    runner = Runner.from_config(config, objective)  # devices, hosts, step options
    state = runner.place(ensemble_state(config, lambda c: create_state(c, dataset, model)))
    procs = jax.process_count()
    train_it = data.train_iterator(
        dataset,
        config.batch_size // procs,
        config.seed,
        shard_index=jax.process_index(),
        shard_count=procs,
    )
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=config.max_checkpoints_to_keep)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    try:
        state, start, window = _restore(ckpt, config, state, train_it, writer)
        state = runner.to_run(runner.place(state))
        final = _run(
            config,
            dataset,
            state,
            start,
            window,
            runner,
            train_it,
            ckpt,
            writer,
            stop_after_step,
        )
    finally:
        ckpt.close()
        writer.close()
    return final


def _restore(ckpt, config, state, train_it, writer):
    """Resumes from the latest checkpoint if there is one: (state, start step, metric window)."""
    latest = ckpt.latest_step()
    if latest is None:
        return transfer.init_from(config, state), 0, {}
    ckpt.check_compatible(latest, config)
    tree, data_state = ckpt.restore(latest, state.checkpoint_tree())
    train_it.set_state(data_state["iterator"])
    writer.truncate_after(latest)
    _say(f"Resuming from the checkpoint at step {latest} in {ckpt.directory}")
    window = {k: jnp.float32(v) for k, v in data_state["window"].items()}
    return state.from_checkpoint_tree(tree), latest, window


def _run(config, dataset, state, start, window, runner, train_it, ckpt, writer, stop):
    total = config.num_train_steps
    last = total if stop is None else min(stop, total)
    eval_data = data.eval_batches(dataset, config.eval_batch_size)
    progress = Progress(start, total, enabled=config.progress_bar and jax.process_index() == 0)
    final, saved = {}, ckpt.latest_step()
    step = start
    while step < last:  # steps_per_call steps per dispatch, cut at every log/eval/save step
        k = steps_this_call(config, step, last)
        state, sums = runner.train(state, [next(train_it) for _ in range(k)])
        step += k
        window = sums if not window else jax.tree.map(jnp.add, window, sums)
        progress.update(step)
        if _due(step, config.log_every_steps, total):
            train = {
                f"train_{k}": v for k, v in objectives.summarize(jax.device_get(window)).items()
            }
            writer.write(step, {**train, "steps_per_sec": progress.rate(step)})
            final, window = {**final, **train}, {}
        if _due(step, config.eval_every_steps, total):
            final = {**final, **_eval(runner.eval, state, eval_data, writer, step)}
        if _due(step, config.checkpoint_every_steps, total) or step == last:
            data_state = {
                "iterator": train_it.get_state(),
                "window": {k: float(v) for k, v in jax.device_get(window).items()},
            }
            ckpt.save(
                step,
                runner.canonical(state).checkpoint_tree(),
                data_state,
                config,
                dataset.assets,
            )
            saved = step
    progress.close()
    if start >= total:  # already finished: report, write nothing
        final = _eval(runner.eval, state, eval_data, writer, None)
    end = max(start, last)
    _say(f"{'Finished' if end >= total else 'Stopped'} at step {end}; last checkpoint step {saved}")
    return {"step": end, **final}


def _eval(eval_fn, state, eval_data, writer, step) -> dict:
    metrics = {
        f"eval_{k}": v for k, v in objectives.summarize(evaluate(eval_fn, state, eval_data)).items()
    }
    if step is not None:
        writer.write(step, metrics)
    else:
        _say(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics
