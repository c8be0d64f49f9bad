"""Optimizers by name: optax chains of clipping, the update rule and a learning-rate schedule."""

import optax

from dlkit import errors
from dlkit.train import scratch
from dlkit.train.options import OptimizerOptions


def make_schedule(cfg: OptimizerOptions, num_train_steps: int) -> optax.Schedule:
    """constant: lr; cosine: lr (1 + cos(pi t / T)) / 2; warmup_cosine: linear warmup, cosine."""
    lr, kind, warmup = cfg.learning_rate, cfg.schedule, cfg.warmup_steps
    schedules = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, max(num_train_steps, 1)),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(num_train_steps, warmup + 1)
        ),
    }
    return errors.choose(schedules, kind, "schedule")()


def _rule(name: str, lr, cfg: OptimizerOptions) -> optax.GradientTransformation:
    momentum = cfg.momentum
    rules = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": lambda: optax.adam(lr, b1=cfg.b1, b2=cfg.b2),
        "adamw": lambda: optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
        "sgd_scratch": lambda: scratch.sgd(lr),
        "adam_scratch": lambda: scratch.adam(lr),
    }
    return errors.choose(rules, name, "optimizer")()


def make_optimizer(cfg, num_train_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip_norm > 0) -> the named rule with the schedule.

    cfg: OptimizerOptions, or a config's optimizer section (parsed into one, defaults filled).
    """
    if not isinstance(cfg, OptimizerOptions):
        cfg = OptimizerOptions.from_config(cfg)
    rule = _rule(cfg.name, make_schedule(cfg, num_train_steps), cfg)
    clip = cfg.grad_clip_norm
    return optax.chain(optax.clip_by_global_norm(clip), rule) if clip > 0 else rule
