"""A trained run in one call, and params-only files.

- `load(path, step=None, ema=False) -> Loaded(model, variables, config, assets, step)`: path is a
  training workdir, its checkpoints/ folder or one step folder; arrays come back on this process's
  first device whatever device count saved them. `model.apply(variables, x, train=False)` runs it.
  `ema=True`: the params are the run's moving average (config.ema.decay > 0; dlkit.train.ema).
- `load_language_model(path, ema=False)` -> (model, variables, tokenizer) for sampling a text model.
- `save_params(path, variables)` / `load_params(path)`: any pytree of arrays (e.g. variables from
  `dlkit.convert.from_torch`) as an Orbax folder, without optimizer state or config.
"""

import pathlib
from typing import Any, NamedTuple

import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

from dlkit.data.text import tokenizer_from_assets
from dlkit.errors import ConfigError
from dlkit.train import ema as ema_lib
from dlkit.train.build import build_model
from dlkit.train.checkpoint import _local_target, restore_latest


class Loaded(NamedTuple):
    """What `load` returns: the registry model, {"params", ...} variables, the run's config
    (ml_collections.ConfigDict), its assets (e.g. {"tokenizer": ...}) and the step."""

    model: Any
    variables: dict
    config: Any
    assets: dict
    step: int


def _num_classes(params: dict, assets: dict) -> int | None:
    """The output size of a saved model: its head, else its tokenizer, else its embedding."""
    leaves = traverse_util.flatten_dict(params, sep="/")
    if "head/kernel" in leaves:
        return int(leaves["head/kernel"].shape[-1])
    tok = assets.get("tokenizer") or {}
    if tok.get("vocab"):
        return len(tok["vocab"])
    embed = leaves.get("embed/embedding")
    return None if embed is None else int(embed.shape[-2])


def _ema_params(state: dict, path):
    """The saved EMA of the params in the params' dtypes; ConfigError if the run kept none."""
    if state.get("ema_params") is None:
        raise ConfigError(
            f"{path}: the run kept no EMA of its weights (config.ema.decay was 0); "
            "load it without ema=True, or train with --config.ema.decay=0.999"
        )
    return ema_lib.as_params(state["ema_params"], state["params"])


def load(path, step: int | None = None, *, ema: bool = False) -> Loaded:
    """The model, variables, config and assets of a saved run (latest step, or `step`); with
    `ema=True` the variables hold the EMA of the params (beside the raw model state)."""
    saved = restore_latest(path, items=("config", "assets", "state"), step=step)
    config = saved.get("config") or {}
    if "model" not in config:
        raise ConfigError(f"{path}: the checkpoint has no model config; was it saved by dlkit?")
    state, assets = saved["state"], saved.get("assets") or {}
    # the model section alone (old keys migrated); num_classes: the section's, else the head's
    model = build_model(
        {"model": config["model"]}, num_classes=_num_classes(state["params"], assets)
    )
    params = _ema_params(state, path) if ema else state["params"]
    variables = {"params": params, **(state.get("model_state") or {})}
    return Loaded(model, variables, ml_collections.ConfigDict(config), assets, saved["step"])


def load_language_model(path, step: int | None = None, *, ema: bool = False):
    """(model, variables, tokenizer) of a saved language-model run, for sampling and probing
    (`ema=True`: its EMA weights)."""
    run = load(path, step, ema=ema)
    if not hasattr(run.model, "step"):
        name = run.config.model.name
        raise ConfigError(f"model {name!r} has no step(): it cannot generate text")
    return run.model, run.variables, tokenizer_from_assets(run.assets)


def save_params(path, variables, *, overwrite: bool = False) -> pathlib.Path:
    """Writes a pytree of arrays to the folder `path` (Orbax); refuses to overwrite unless asked."""
    path = pathlib.Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; choose a new path or pass overwrite=True")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, variables, force=overwrite)
    return path


def load_params(path):
    """The pytree written by `save_params`, on this process's first device."""
    path = pathlib.Path(path).expanduser().absolute()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a params folder written by dlkit.train.save_params")
    try:
        target = _local_target(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{path} is not a params folder written by save_params: {e}") from None
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path, target)
