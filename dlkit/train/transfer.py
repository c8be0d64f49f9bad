"""Deprecated alias (one release): transfer learning now lives in `dlkit.train.init_from`,
`dlkit.train.freeze`, `dlkit.train.vectors` and `dlkit.train.paths`, and takes
`dlkit.train.options.TransferOptions` instead of a ConfigDict.

The config-taking functions below parse the config into options and call the new ones; they stay
until the loop takes `RunOptions` (phase 2 of issue 14), then this module goes.
"""

from dlkit import models
from dlkit.train import freeze as _freeze
from dlkit.train import init_from as _init_from
from dlkit.train import vectors as _vectors
from dlkit.train.freeze import frozen_apply_fn, keep_frozen
from dlkit.train.init_from import format_table, match_variables, read_checkpoint
from dlkit.train.options import RunOptions
from dlkit.train.paths import flatten, matches, path_str, unflatten

__all__ = [
    "flatten",
    "format_table",
    "frozen_apply_fn",
    "init_from",
    "init_vectors",
    "keep_frozen",
    "match_variables",
    "matches",
    "param_labels",
    "path_str",
    "patterns",
    "prepare_state",
    "read_checkpoint",
    "unflatten",
    "wrap_optimizer",
]


def patterns(value) -> tuple[str, ...]:
    """A config field (None, one str, or a sequence of str) as a tuple of regexes."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def init_from(config, state):
    """Deprecated: dlkit.train.init_from.init_from(state, options.transfer, model)."""
    options = RunOptions.from_config(config)
    model = None
    if options.transfer.convert:  # the model whose layout the weights file is converted to
        kwargs = {"num_classes": 1, **dict(options.model.kwargs)}
        model = models.get(options.model.name, **kwargs)
    return _init_from.init_from(state, options.transfer, model)


def param_labels(params, config):
    """Deprecated: dlkit.train.freeze.param_labels(params, options.transfer)."""
    return _freeze.param_labels(params, RunOptions.from_config(config).transfer)


def wrap_optimizer(config, base):
    """Deprecated: dlkit.train.freeze.wrap_optimizer(options.transfer, base)."""
    return _freeze.wrap_optimizer(RunOptions.from_config(config).transfer, base)


def init_vectors(config, state, dataset):
    """Deprecated: dlkit.train.vectors.init_vectors(state, options.transfer, dataset, seed)."""
    options = RunOptions.from_config(config)
    return _vectors.init_vectors(state, options.transfer, dataset, options.seed)


def prepare_state(config, state, dataset=None):
    """Deprecated: init_vectors then freeze.freeze_state, with options parsed from config."""
    options = RunOptions.from_config(config)
    state = _vectors.init_vectors(state, options.transfer, dataset, options.seed)
    return _freeze.freeze_state(state, options.transfer)
