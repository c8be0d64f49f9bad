"""Typed run options: the experiment config parsed once, at the door, into frozen dataclasses.

`RunOptions.from_config(config)` migrates old keys (`migrate`), checks every key and value and
fills every default; library code takes these options, not a ConfigDict. One room per concern:

    parse.py       the one field parser (types, bounds, choices, hooks from field metadata)
    sections.py    the sections: RunOptions and one frozen dataclass per config section
    migrate.py     old keys moved to their new places, retired keys and values
    diff.py        resumable keys and the differences that make a checkpoint another run's
    configdict.py  the default ConfigDict generated from the fields

    section      options class        fields
    (top level)  RunOptions           seed, loss, batch_size, eval_batch_size, num_train_steps,
                                      log_every_steps, eval_every_steps, progress_bar
    model        ModelOptions         name + the factory's keyword arguments
    data         (FrozenConfigDict)   name + the dataset's own fields, read-only
    optimizer    OptimizerOptions     name, learning_rate, schedule, warmup_steps, momentum,
                                      weight_decay, grad_clip_norm, b1, b2
    step         TrainStepOptions     grad_accum_steps, dp.{enabled, clip_norm, noise_multiplier},
                                      mixed_precision, nonfinite
    parallel     ParallelOptions      kind, cpu_devices, steps_per_call, ensemble_size,
                                      coordinator_address, num_processes, process_id
    transfer     TransferOptions      init_from, convert, rename, skip, freeze, backbone_lr_scale,
                                      vectors, vectors_param
    checkpoint   CheckpointOptions    every_steps, max_to_keep, preemption_signals
    ema          EmaOptions           decay
    profile      ProfileOptions       start_step, num_steps
"""

from dlkit.train.options.configdict import add_flat_placeholders, defaults
from dlkit.train.options.diff import canonical, config_differences, resumable_keys
from dlkit.train.options.migrate import MOVED_KEYS, RETIRED_KEYS, RETIRED_VALUES, migrate
from dlkit.train.options.parse import Section, as_dict, option, parse_section
from dlkit.train.options.sections import (
    CheckpointOptions,
    DPOptions,
    EmaOptions,
    ModelOptions,
    OptimizerOptions,
    ParallelOptions,
    ProfileOptions,
    RunOptions,
    TrainStepOptions,
    TransferOptions,
    rename_rules,
    signal_names,
)
from dlkit.train.parallel import KINDS as PARALLEL_KINDS

__all__ = [
    "RunOptions",
    "ModelOptions",
    "OptimizerOptions",
    "TrainStepOptions",
    "DPOptions",
    "ParallelOptions",
    "TransferOptions",
    "CheckpointOptions",
    "EmaOptions",
    "ProfileOptions",
    "Section",
    "option",
    "parse_section",
    "as_dict",
    "migrate",
    "MOVED_KEYS",
    "RETIRED_KEYS",
    "RETIRED_VALUES",
    "resumable_keys",
    "canonical",
    "config_differences",
    "defaults",
    "add_flat_placeholders",
    "rename_rules",
    "signal_names",
    "PARALLEL_KINDS",
]
