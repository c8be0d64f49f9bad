"""Loop scheduling: how many steps the next dispatch runs."""

from dlkit.train.options import CheckpointOptions, ParallelOptions, RunOptions, migrate


def steps_this_call(step: int, last: int, *, steps_per_call: int, every=()) -> int:
    """min(steps_per_call, last - step), cut at the next multiple of each positive interval in
    `every` (log, eval, checkpoint); at least 1."""
    k = min(steps_per_call, last - step)
    for interval in every:
        if interval > 0:
            k = min(k, interval - step % interval)
    return max(k, 1)


def loop_intervals(options) -> tuple[int, int, int]:
    """(log, eval, checkpoint) intervals of a RunOptions: the steps a dispatch must stop at."""
    return options.log_every_steps, options.eval_every_steps, options.checkpoint.every_steps


def steps_this_call_from_config(config, step: int, last: int) -> int:
    """Deprecated (phase 2 of issue 14 deletes it): steps_this_call with a ConfigDict.

    Called once per dispatch by the phase-1 loop, so it parses only the sections it needs (a
    whole RunOptions.from_config takes ~1 ms).
    """
    sub, _ = migrate({k: config[k] for k in _SCHEDULE_KEYS if k in config})
    every = (
        sub.get("log_every_steps", RunOptions.log_every_steps),
        sub.get("eval_every_steps", RunOptions.eval_every_steps),
        CheckpointOptions.from_config(sub.get("checkpoint", {})).every_steps,
    )
    per_call = ParallelOptions.from_config(sub.get("parallel", {})).steps_per_call
    return steps_this_call(step, last, steps_per_call=per_call, every=every)


_SCHEDULE_KEYS = (
    "log_every_steps",
    "eval_every_steps",
    "steps_per_call",
    "checkpoint_every_steps",
    "parallel",
    "checkpoint",
)
