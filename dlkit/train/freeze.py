"""Freezing by pattern and per-group learning rates (`TransferOptions.freeze`,
`backbone_lr_scale`, `skip`), without changing the shared train step.

- Params matching `freeze` get `optax.set_to_zero` inside `optax.multi_transform`; the trainable
  params not in `skip` (the pre-trained backbone) get the base update scaled by
  `backbone_lr_scale`; the `skip` layers (new) train at the full rate.
- Mutable state matching `freeze` keeps its previous value bit for bit, and a BatchNorm whose
  statistics match ("<module>/mean") normalises with its running statistics (inference mode) in
  training too: `frozen_apply_fn` wraps the state's apply_fn with a method interceptor that runs
  such a BatchNorm as a clone with `use_running_average=True` bound to the same scope (the
  module itself is never changed).
"""

import flax.linen as nn
import jax
import optax

from dlkit.errors import ConfigError
from dlkit.paths import few, key_name, leaf_paths, matches, path_str


def param_labels(params, options):
    """A tree of "frozen" | "backbone" | "train" labels for optax.multi_transform."""
    scaled = options.backbone_lr_scale != 1.0

    def label(kp, _):
        path = path_str(kp)
        if matches(path, options.freeze):
            return "frozen"
        return "backbone" if scaled and not matches(path, options.skip) else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def wrap_optimizer(options, base: optax.GradientTransformation) -> optax.GradientTransformation:
    """base inside multi_transform (frozen: set_to_zero, backbone: base then scale) if asked."""
    if not options.freeze and options.backbone_lr_scale == 1.0:
        return base
    transforms = {
        "train": base,
        "frozen": optax.set_to_zero(),
        "backbone": optax.chain(base, optax.scale(options.backbone_lr_scale)),
    }
    return optax.multi_transform(transforms, lambda p: param_labels(p, options))


def _frozen_batchnorm(module, method_name: str, freeze) -> bool:
    return (
        method_name == "__call__"
        and isinstance(module, nn.BatchNorm)
        and module.use_running_average is not True
        and matches("/".join(module.scope.path) + "/mean", freeze)
    )


def _bn_inference(freeze):
    """An interceptor: BatchNorm layers whose "<path>/mean" is frozen use running statistics."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not _frozen_batchnorm(module, context.method_name, freeze):
            return next_fun(*args, **kwargs)
        if module.use_running_average is None:  # set per call: pass it (x, use_running_average)
            if len(args) > 1:
                return next_fun(args[0], True, *args[2:], **kwargs)
            return next_fun(*args, **{**kwargs, "use_running_average": True})
        clone = module.clone(parent=module.scope, use_running_average=True)  # same variables
        return clone(*args, **kwargs)

    return interceptor


def keep_frozen(new_state: dict, old_variables: dict, freeze) -> dict:
    """new_state with every leaf whose path matches `freeze` taken from old_variables."""

    def pick(kp, new):
        col, path = key_name(kp[0]), path_str(kp[1:])
        if col not in old_variables or not matches(path, freeze):
            return new  # e.g. "intermediates": created by this call, nothing to keep
        old = old_variables[col]
        for entry in kp[1:]:
            old = old[key_name(entry)]
        return old

    return jax.tree_util.tree_map_with_path(pick, dict(new_state))


def frozen_apply_fn(apply_fn, freeze):
    """apply_fn where frozen BatchNorms run in inference mode and frozen state never changes."""
    interceptor = _bn_inference(freeze)

    def apply(variables, *args, mutable=False, **kwargs):
        with nn.intercept_methods(interceptor):
            out = apply_fn(variables, *args, mutable=mutable, **kwargs)
        if not mutable:
            return out
        y, new_state = out
        return y, keep_frozen(new_state, variables, freeze)

    return apply


def check_freeze(params, freeze) -> None:
    """ConfigError if a pattern matches no parameter, or the patterns match every parameter."""
    paths = leaf_paths(params)
    for p in freeze:
        if not matches_any(p, paths):
            raise ConfigError(
                f"transfer.freeze pattern {p!r} matches no parameter; the model's are: "
                f"{few(paths, 8)}"
            )
    if all(matches(path, freeze) for path in paths):
        raise ConfigError(f"transfer.freeze {list(freeze)} matches every parameter; nothing trains")


def matches_any(pattern: str, paths) -> bool:
    """True if the pattern matches one of the paths."""
    return any(matches(path, (pattern,)) for path in paths)


def freeze_state(state, options):
    """state with apply_fn wrapped for frozen state (checked against its params), if any."""
    if not options.freeze:
        return state
    check_freeze(state.params, options.freeze)
    return state.replace(apply_fn=frozen_apply_fn(state.apply_fn, options.freeze))
