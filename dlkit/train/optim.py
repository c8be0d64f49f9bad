"""Optimizers by name: the update rules and learning-rate schedules that config.optimizer's
`name` and `schedule` choose from (dlkit.train.options reads these tables for its choices), and
the optax chain of clipping, rule and schedule (`chain`; dlkit.train.make_optimizer)."""

import optax

from dlkit import errors
from dlkit.train import scratch

# name -> (OptimizerOptions, num_train_steps) -> optax schedule
SCHEDULES = {
    "constant": lambda o, n: optax.constant_schedule(o.learning_rate),
    "cosine": lambda o, n: optax.cosine_decay_schedule(o.learning_rate, max(n, 1)),
    "warmup_cosine": lambda o, n: optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, o.warmup_steps, max(n, o.warmup_steps + 1)
    ),
}
# name -> (learning rate or schedule, OptimizerOptions) -> optax update rule
RULES = {
    "sgd": lambda lr, o: optax.sgd(lr),
    "momentum": lambda lr, o: optax.sgd(lr, momentum=o.momentum),
    "nesterov": lambda lr, o: optax.sgd(lr, momentum=o.momentum, nesterov=True),
    "adam": lambda lr, o: optax.adam(lr, b1=o.b1, b2=o.b2),
    "adamw": lambda lr, o: optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay),
    "sgd_scratch": lambda lr, o: scratch.sgd(lr),
    "adam_scratch": lambda lr, o: scratch.adam(lr),
}


def make_schedule(options, num_train_steps: int) -> optax.Schedule:
    """constant: lr; cosine: lr (1 + cos(pi t / T)) / 2; warmup_cosine: linear warmup, cosine."""
    return errors.choose(SCHEDULES, options.schedule, "schedule")(options, num_train_steps)


def chain(options, num_train_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip_norm > 0) -> the named rule with the schedule.

    options: an OptimizerOptions (dlkit.train.make_optimizer also takes a config section)."""
    rule = errors.choose(RULES, options.name, "optimizer")
    rule = rule(make_schedule(options, num_train_steps), options)
    clip = options.grad_clip_norm
    return optax.chain(optax.clip_by_global_norm(clip), rule) if clip > 0 else rule
