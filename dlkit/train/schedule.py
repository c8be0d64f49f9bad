"""Loop scheduling: how many steps the next dispatch runs."""


def steps_this_call(step: int, last: int, *, steps_per_call: int, every=(), edges=()) -> int:
    """min(steps_per_call, last - step), cut at the next multiple of each positive interval in
    `every` (log, eval, checkpoint) and at each of the steps `edges` (the profile window's ends)
    after `step`; at least 1."""
    k = min(steps_per_call, last - step)
    for interval in every:
        if interval > 0:
            k = min(k, interval - step % interval)
    for edge in edges:
        if edge > step:
            k = min(k, edge - step)
    return max(k, 1)


def loop_intervals(options) -> tuple[int, int, int]:
    """(log, eval, checkpoint) intervals of a RunOptions: the steps a dispatch must stop at."""
    return options.log_every_steps, options.eval_every_steps, options.checkpoint.every_steps
