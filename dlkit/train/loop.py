"""train_and_evaluate: the one training loop, with periodic evaluation and exact resume.

Faults it survives: preemption signals (save, exit 75), non-finite steps (stop or skip), damaged
checkpoints (set aside, the newest readable one restored), a second run on the workdir (refused).
It prints only its progress lines (CPU layout, "step N:" metrics, Resuming, Finished) and sets
nothing process-wide: it uses the devices the process has (host set-up: the door's dlkit.platform).
"""

import logging
import pathlib

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from dlkit import data
from dlkit.errors import ConfigError, Diverged, Preempted, RunError
from dlkit.train import cpu_layout, ema, objectives
from dlkit.train.build import build_model, create_state
from dlkit.train.checkpoint import Checkpointer, Damaged, all_finite, warn
from dlkit.train.config import check_batch_fits, validate
from dlkit.train.divergence import NonFiniteWatch
from dlkit.train.ensemble import ensemble_state
from dlkit.train.init_from import init_from
from dlkit.train.metrics import MetricWriter, Progress
from dlkit.train.options.sections import RunOptions
from dlkit.train.parallel import initialize_distributed
from dlkit.train.preemption import SignalWatch
from dlkit.train.profiler import ProfileWindow
from dlkit.train.runner import Runner
from dlkit.train.schedule import loop_intervals, steps_this_call
from dlkit.train.step import evaluate
from dlkit.train.workdir import exclusive

log = logging.getLogger("dlkit")


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _say(message: str) -> None:
    """A progress line, logged (a door shows "dlkit" INFO lines: dlkit.cli.show_progress)."""
    if jax.process_index() == 0:
        log.info(message)


def train_and_evaluate(config, workdir, *, stop_after_step: int | None = None) -> dict:
    """Trains options.model on options.data for options.num_train_steps; returns final metrics.

    `config`: a RunOptions, or a ConfigDict parsed into one here (the door: every setting checked
    and defaulted once). `stop_after_step` ends this invocation early (after saving a checkpoint
    there), as if the run were stopped; rerunning the same config in the same workdir continues
    exactly. The run holds the workdir's lock; a preemption signal saves and raises Preempted
    (exit 75); non-finite loss or gradients with step.nonfinite=stop raise Diverged.
    """
    options = validate(config)  # the door: a RunOptions, checked and defaulted once
    workdir = pathlib.Path(workdir)
    initialize_distributed(options.parallel)  # multi-host: before any computation
    for message in options.deprecations:
        warn(message)
    signals = options.checkpoint.preemption_signals
    with exclusive(workdir), SignalWatch(signals) as watch:
        return _train(options, workdir, stop_after_step, watch)


def _train(options: RunOptions, workdir, stop_after_step, watch) -> dict:
    dataset = data.load(options.data)
    check_batch_fits(options, dataset)
    model = build_model(options, dataset)
    objective = objectives.get(options.loss)
    create = lambda seed: create_state(options, dataset, model, seed)  # noqa: E731
    init = lambda: ensemble_state(options.parallel.ensemble_size, options.seed, create)  # noqa
    example = dataset.example_batch(options.batch_size)
    layout = cpu_layout.decide(options, objective, init, example)  # before the one runner
    if layout.reason is not None:
        _say(f"dlkit CPU layout: {layout.reason}")
    runner = Runner.create(options, objective, devices=layout.devices)  # devices, hosts, step
    state = runner.place(init())  # placed once; a restore reads into this layout
    procs = jax.process_count()
    train_it = data.train_iterator(
        dataset,
        options.batch_size // procs,
        options.seed,
        shard_index=jax.process_index(),
        shard_count=procs,
    )
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=options.checkpoint.max_to_keep)
    writer, profile = None, ProfileWindow(options.profile, workdir / "profile", say=_say)
    try:
        state, start, window = _restore(ckpt, options, state, train_it, model)
        writer = MetricWriter(workdir, enabled=jax.process_index() == 0, start_step=start)
        run = _Run(options, dataset, runner, train_it, ckpt, writer, watch, profile)
        state = runner.place(state)  # no-op but for what init_from loaded (host arrays)
        return run.loop(state, start, window, stop_after_step)
    finally:
        profile.close()  # a trace cut short by an error or a stop is still written
        ckpt.close()
        if writer is not None:
            writer.close()


def _restore(ckpt, options, state, train_it, model):
    """Resumes from the newest readable checkpoint if there is one: (state, step, window)."""
    step, (tree, data_state) = _newest_readable(ckpt, options, state.checkpoint_tree())
    if step is None:
        return init_from(state, options.transfer, model), 0, {}
    train_it.set_state(data_state["iterator"])
    _say(f"Resuming from the checkpoint at step {step} in {ckpt.directory}")
    window = {k: jnp.float32(v) for k, v in data_state["window"].items()}
    return state.from_checkpoint_tree(tree), step, window


def _newest_readable(ckpt, options, target):
    """(step, restored) of the newest checkpoint that reads; the newer ones are set aside.

    A newer step that differs from an older readable step of the same run (config or shapes) is
    damage too; when none reads, a mismatch is a ConfigError and damage a RunError, and nothing
    moves.
    """
    failed = []
    for step in ckpt.all_steps():
        try:
            ckpt.check_compatible(step, options)
            restored = ckpt.restore(step, target)
        except (Damaged, ConfigError) as e:
            failed.append((step, e))
            continue
        for bad, e in failed:
            why = str(e) if isinstance(e, Damaged) else "its config or array metadata are garbled"
            moved = ckpt.set_aside(str(bad)) if jax.process_index() == 0 else bad
            warn(f"checkpoint step {bad} is damaged ({why}); moved to {moved}")
        if jax.process_count() > 1:  # every process, whatever it found: no deadlock
            _barrier("dlkit_set_aside")
            ckpt.manager.reload()  # the other processes see process 0's moves
        return step, restored
    mismatch = [e for _, e in failed if isinstance(e, ConfigError)]
    if mismatch:
        raise mismatch[0]
    if failed:
        listing = "; ".join(f"step {s}: {e}" for s, e in failed)
        raise RunError(
            f"no readable checkpoint in {ckpt.directory} ({listing}); nothing was deleted: "
            "move that directory away to start afresh"
        )
    return None, (None, None)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class _Run:
    """One invocation's loop: dispatches, metrics, evaluation, checkpoints and stop requests."""

    def __init__(
        self, options: RunOptions, dataset, runner, train_it, ckpt, writer, watch, profile
    ):
        self.options, self.dataset, self.runner = options, dataset, runner
        self.train_it, self.ckpt, self.writer, self.watch = train_it, ckpt, writer, watch
        self.profile = profile  # dlkit.train.profiler.ProfileWindow
        self.skip = options.step.nonfinite == "skip_step"
        self.nonfinite = NonFiniteWatch()
        self.saved = ckpt.latest_step()
        self.eval_data = data.eval_batches(dataset, options.eval_batch_size)

    def loop(self, state, start: int, window: dict, stop: int | None) -> dict:
        options, total = self.options, self.options.num_train_steps
        last = total if stop is None else min(stop, total)
        intervals = every_log, every_eval, every_save = loop_intervals(options)
        per_call = options.parallel.steps_per_call
        progress = Progress(start, total, enabled=options.progress_bar and jax.process_index() == 0)
        final, step = {}, start
        while step < last:  # steps_per_call steps per dispatch, cut at every log/eval/save step
            k = steps_this_call(
                step, last, steps_per_call=per_call, every=intervals, edges=self.profile.edges
            )
            with self.profile.call(step, state):
                state, sums = self.runner.train(state, [next(self.train_it) for _ in range(k)])
            sums = self.nonfinite.record(step, sums)
            step += k
            self.profile.after(step, state)
            window = sums if not window else jax.tree.map(jnp.add, window, sums)
            progress.update(step)
            preempted = self.watch.requested()
            log, ev = _due(step, every_log, total), _due(step, every_eval, total)
            save = _due(step, every_save, total) or step == last or preempted
            if log or ev or save or self.nonfinite.due():
                self._check_finite()
            if log:
                final, window = {**final, **self._log(step, window, progress)}, {}
            if ev:
                final = {
                    **final,
                    **_eval(self.runner.eval, state, self.eval_data, self.writer, step),
                }
            if save and self.saved != step:
                self._save(step, state, window)
            if preempted:
                self._preempted(step)
        progress.close()
        if start >= total:  # already finished: report, write nothing
            final = _eval(self.runner.eval, state, self.eval_data, self.writer, None)
        end = max(start, last)
        done = "Finished" if end >= total else "Stopped"
        _say(f"{done} at step {end}; last checkpoint step {self.saved}")
        return {"step": end, **final}

    def _check_finite(self) -> None:
        """Diverged (policy stop) when a step since the last check was non-finite."""
        if self.skip:
            self.nonfinite.pending = []
            return
        bad = self.nonfinite.first_bad_step()
        if bad is None:
            return
        where = (
            f"the last finite checkpoint is step {self.saved} in {self.ckpt.directory}"
            if self.saved is not None
            else "no checkpoint was written before it"
        )
        raise Diverged(
            f"non-finite loss or gradients at step {bad}; {where}. Lower the learning rate, or "
            "rerun with --config.step.nonfinite=skip_step to skip such steps"
        )

    def _log(self, step: int, window: dict, progress) -> dict:
        window = dict(jax.device_get(window))
        skipped = float(window.pop("nonfinite", 0.0))
        train = {f"train_{k}": v for k, v in objectives.summarize(window).items()}
        if self.skip:
            train["train_skipped_steps"] = skipped
        self.writer.write(step, {**train, "steps_per_sec": progress.rate(step)})
        return train

    def _save(self, step: int, state, window: dict) -> None:
        tree = state.checkpoint_tree()
        if not all_finite(tree["params"]):
            raise Diverged(
                f"the parameters are non-finite at step {step}; no checkpoint was written there "
                f"(the last one is step {self.saved}). Lower the learning rate"
            )
        data_state = {
            "iterator": self.train_it.get_state(),
            "window": {k: float(v) for k, v in jax.device_get(window).items()},
        }
        self.ckpt.save(step, tree, data_state, self.options, self.dataset.assets, force=True)
        self.saved = step

    def _preempted(self, step: int) -> None:
        self.ckpt.wait()  # the save at this step is committed before we report it
        raise Preempted(
            f"Preempted at step {step}; checkpoint saved; rerun the same command to continue",
            step=step,
            signal=self.watch.signum,
        )


def _eval(eval_fn, state, eval_data, writer, step) -> dict:
    """eval_* metrics of the params and, with an EMA, eval_ema_* of its average."""
    metrics = {
        f"eval_{k}": v for k, v in objectives.summarize(evaluate(eval_fn, state, eval_data)).items()
    }
    if state.ema_params is not None:
        sums = evaluate(eval_fn, ema.view(state), eval_data)
        metrics.update({f"eval_ema_{k}": v for k, v in objectives.summarize(sums).items()})
    if step is not None:
        writer.write(step, metrics)
    else:
        _say(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics
