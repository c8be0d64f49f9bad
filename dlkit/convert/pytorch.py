"""from_torch / to_torch: PyTorch state_dicts <-> dlkit variables for the model zoo."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from dlkit import models
from dlkit.convert import layouts
from dlkit.convert.io import read_state_dict
from dlkit.errors import ConfigError
from dlkit.nn.cnn import _per_layer
from dlkit.ops.pooling import conv_output_size
from dlkit.paths import flatten, unflatten

IMAGE_SIZE = 224  # abstract example input for the ImageNet families (shapes only, nothing runs)


def _first_weight(sd, ndim):
    return next((v for k, v in sd.items() if k.endswith("weight") and v.ndim == ndim), None)


def _cnn_side(model, rows: int) -> int:
    """The square input side whose conv/pool stack flattens to `rows` features."""
    pads = _per_layer(model.padding, len(model.features))
    for side in range(1, 2049):
        s = side
        try:
            for pad in pads:
                s = conv_output_size(s, model.kernel_size, 1, pad)
                s = conv_output_size(s, model.pool_window, model.pool_window, 0)
        except ValueError:
            continue
        if s * s * model.features[-1] == rows:
            return side
    raise ConfigError(
        f"no square input gives {rows} flattened features for this cnn's settings; "
        "check features, kernel_size, padding and pool_window"
    )


def example_input(name: str, model, sd: dict):
    """A small input with which model.init creates parameters of the state_dict's shapes."""
    fam = layouts.family(name)
    if fam in (layouts.charlm, layouts.transformer_lm):
        return jnp.zeros((1, 2), jnp.int32)
    if fam is layouts.mlp:
        w = _first_weight(sd, 2)
        return jnp.zeros((1, 1 if w is None else w.shape[1]), jnp.float32)
    conv = _first_weight(sd, 4)
    channels = 3 if conv is None else conv.shape[1]
    side = IMAGE_SIZE
    if fam is layouts.cnn:
        dense = [v for k, v in sd.items() if k.endswith("weight") and v.ndim == 2]
        side = _cnn_side(model, dense[0].shape[1]) if dense else 28
    return jnp.zeros((1, side, side, channels), jnp.float32)


def target_shapes(model, example) -> dict:
    """{(collection, path): shape} of model.init(example) (abstract: nothing is computed)."""
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, example))
    return {k: tuple(v.shape) for k, v in flatten(dict(shapes)).items()}


def _label(fkeys) -> str:
    return ", ".join(f"{c}:{p}" if c != "params" else p for c, p in fkeys)


def convert_state_dict(name: str, sd: dict, model, target: dict, *, strict=True) -> dict:
    """{(collection, path): array} for `target`'s leaves from a {key: numpy} state_dict.

    strict: every converted shape must equal target's (else ConfigError); with strict=False the
    arrays keep the state_dict's shapes (init_from then skips or reports them).
    """
    rules, ignored = layouts.family(name)(name, model, target, sd)
    used, out = set(), {}
    for rule in rules:
        arrays = []
        for key in rule.torch:
            if key in sd:
                arrays.append(sd[key])
                used.add(key)
            elif key in rule.optional:
                arrays.append(None)
            else:
                want = [target.get(f) for f in rule.flax]
                tied = key == "lm_head.weight" and any(k.endswith("wte.weight") for k in sd)
                hint = "; the file ties lm_head to wte: pass tie_embeddings=True" if tied else ""
                raise ConfigError(
                    f"from_torch({name!r}): key {key!r} is missing from the state_dict (it fills "
                    f"{_label(rule.flax)} of shape {', '.join(map(str, want))}){hint}"
                )
        shapes = [target.get(f) for f in rule.flax]
        src = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in rule.torch if k in sd)
        try:
            values = rule.to_flax(arrays, shapes)
        except (layouts.ShapeMismatch, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(
                f"from_torch({name!r}): {src} does not fit {_label(rule.flax)} "
                f"{', '.join(map(str, shapes))}: {e}"
            ) from None
        for fkey, value, shape in zip(rule.flax, values, shapes, strict=True):
            if strict and tuple(value.shape) != shape:
                raise ConfigError(
                    f"from_torch({name!r}): {src} gives {_label([fkey])} {tuple(value.shape)} but "
                    f"the model's is {shape}; "
                    + layouts.setting_hint(name, fkey[1], tuple(value.shape), shape)
                )
            out[fkey] = np.asarray(value, np.float32)
    unknown = [k for k in sd if k not in used and not ignored(k)]
    if unknown:
        k = unknown[0]
        more = f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else ""
        layer = re.search(r"\.h\.(\d+)\.|_l(\d+)(?:_reverse)?$", k)
        hint = "check the model name and settings"
        if layer and hasattr(model, "num_layers"):
            hint = f"the file has more layers than the model: pass num_layers > {model.num_layers}"
        raise ConfigError(
            f"from_torch({name!r}): unknown key {k!r} {tuple(sd[k].shape)}{more}: no parameter "
            f"of this model takes it; {hint}"
        )
    missing = [f for f in target if f not in out]
    if missing:
        raise ConfigError(f"from_torch({name!r}): nothing fills {_label(missing[:4])}")
    return out


def from_torch(name: str, state_dict_or_path, **model_kwargs) -> dict:
    """PyTorch weights -> dlkit variables {"params", ["batch_stats"]} for
    `models.get(name, **model_kwargs).apply(variables, x_nhwc_or_tokens, train=False)`.

    state_dict_or_path: a state_dict (tensors or numpy arrays) or a .pth/.pt/.bin (read with
    torch.load(weights_only=True)) or .safetensors (no torch needed) file. Unknown or missing
    keys and shape mismatches raise ConfigError naming the key and both shapes.
    """
    sd = read_state_dict(state_dict_or_path)
    layouts.family(name)  # unknown names fail before the model is built
    model = models.get(name, **model_kwargs)
    target = target_shapes(model, example_input(name, model, sd))
    flat = convert_state_dict(name, sd, model, target)
    return unflatten({k: jnp.asarray(v) for k, v in flat.items()})


def to_torch(name: str, variables: dict, **model_kwargs) -> dict:
    """dlkit variables -> a state_dict of numpy arrays in the PyTorch layout from_torch reads
    (torchvision names for resnet/vgg/alexnet, nanoGPT names for transformer_lm, dlkit's own
    module names for cnn/lenet5/mlp and the char LMs)."""
    layouts.family(name)
    model = models.get(name, **model_kwargs)
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(dict(variables)).items()}
    target = {k: v.shape for k, v in flat.items()}
    rules, _ = layouts.family(name)(name, model, target, None)
    out = {}
    for rule in rules:
        if not all(f in flat for f in rule.flax):
            raise ConfigError(f"to_torch({name!r}): variables lack {_label(rule.flax)}")
        for key, value in zip(rule.torch, rule.to_torch([flat[f] for f in rule.flax]), strict=True):
            out[key] = np.ascontiguousarray(value)
    if layouts.family(name) in (layouts.resnet, layouts.vgg):
        for key in [k for k in out if k.endswith("running_var")]:
            out[key.replace("running_var", "num_batches_tracked")] = np.zeros((), np.int64)
    return out


def recurrent_from_torch(state_dict_or_path, cell: str = "lstm", prefix: str = "") -> dict:
    """nn.LSTM / nn.GRU / nn.RNN (tanh) weights, any layers, bidirectional or not -> the params
    {"layer_0": ..., "layer_0_bwd": ...} of `dlkit.nn.Recurrent(hidden, layers, cell, bidir)`."""
    sd = read_state_dict(state_dict_or_path)
    tp = f"{prefix}." if prefix else ""
    keys = [k for k in sd if k.startswith(tp) and layouts._RNN_KEY.fullmatch(k)]
    if not keys:
        raise ConfigError(f"no nn.{cell.upper()} weights (weight_ih_l0 ...) under {prefix!r}")
    target = {}
    for k in keys:
        m = layouts._RNN_KEY.fullmatch(k)
        layer = f"layer_{m.group(4)}{'_bwd' if m.group(5) else ''}"
        target[("params", f"{layer}/input/kernel")] = None
    rules = layouts.recurrent_rules(cell, target, "", prefix)
    flat, used = {}, set()
    for rule in rules:
        arrays = [sd.get(k) for k in rule.torch]
        if arrays[0] is None or arrays[1] is None:
            raise ConfigError(f"{rule.torch[0]} or {rule.torch[1]} is missing from the state_dict")
        g = arrays[1].shape[0] / arrays[1].shape[1]
        want = {"lstm": 4, "gru": 3, "rnn": 1}.get(cell)
        if want is None or not math.isclose(g, want):
            raise ConfigError(
                f"{rule.torch[1]} {arrays[1].shape} is not an nn.{cell.upper()} weight "
                f"({want} gates x hidden); pick cell lstm, gru or rnn to match"
            )
        used.update(k for k in rule.torch if k in sd)
        for fkey, v in zip(rule.flax, rule.to_flax(arrays, [None] * len(rule.flax)), strict=True):
            flat[fkey] = jnp.asarray(v)
    extra = [k for k in keys if k not in used]
    if extra:
        raise ConfigError(f"unknown recurrent key {extra[0]!r} {sd[extra[0]].shape}")
    return unflatten(flat)["params"]
