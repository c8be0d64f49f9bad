"""Optimizers by name: optax chains of clipping, the update rule and a learning-rate schedule."""

import optax

from dlkit import errors
from dlkit.train import scratch


def make_schedule(cfg, num_train_steps: int) -> optax.Schedule:
    """constant: lr; cosine: lr (1 + cos(pi t / T)) / 2; warmup_cosine: linear warmup, cosine."""
    lr, kind = cfg.learning_rate, cfg.get("schedule", "constant")
    warmup = cfg.get("warmup_steps", 0)
    schedules = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, max(num_train_steps, 1)),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(num_train_steps, warmup + 1)
        ),
    }
    return errors.choose(schedules, kind, "schedule")()


def _rule(name: str, lr, cfg) -> optax.GradientTransformation:
    momentum = cfg.get("momentum", 0.9)
    rules = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": lambda: optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999)),
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.get("weight_decay", 1e-4)),
        "sgd_scratch": lambda: scratch.sgd(lr),
        "adam_scratch": lambda: scratch.adam(lr),
    }
    return errors.choose(rules, name, "optimizer")()


OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "sgd_scratch", "adam_scratch")


def make_optimizer(cfg, num_train_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip_norm > 0) -> the named rule with the schedule."""
    rule = _rule(cfg.name, make_schedule(cfg, num_train_steps), cfg)
    clip = cfg.get("grad_clip_norm", 0.0) or 0.0
    return optax.chain(optax.clip_by_global_norm(clip), rule) if clip > 0 else rule
