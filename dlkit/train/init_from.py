"""Initialise from another run by parameter path (`TransferOptions.init_from`).

On a fresh start the checkpoint's params and mutable collections (BatchNorm statistics) replace
the model's by path; `rename` rules (applied to checkpoint paths) map subtrees, and `skip`
patterns keep the fresh initialisation (e.g. "head/.*" for a new classifier). Every other path
must be found in both with equal shapes, else a ConfigError naming them. The optimizer state is
re-initialised for the loaded params.
"""

import logging
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dlkit.convert import io as convert_io
from dlkit.convert import pytorch
from dlkit.errors import ConfigError, RunError
from dlkit.paths import few, flatten, matches, unflatten
from dlkit.train import ema
from dlkit.train.options.sections import rename_rules

STATUSES = ("loaded", "skipped", "fresh", "dropped")

# ---------------------------------------------------------------------------- reading

log = logging.getLogger("dlkit")


def checkpoint_location(path) -> tuple[pathlib.Path, int | None]:
    """(the checkpoints directory, a step or None for the latest) for a user path."""
    path = pathlib.Path(path).expanduser().absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.is_dir() and path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    if path.is_dir():
        return path, None
    raise ConfigError(f"init_from: {path} does not exist; give a workdir or a checkpoint folder")


def _finished_steps(directory: pathlib.Path) -> list[int]:
    """Steps with a committed state folder (Orbax writes tmp folders, then renames them)."""
    return sorted(
        int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "state").is_dir()
    )


# phase 2: moves to checkpoint.py (as restore_state_on_one_device, the one Orbax read path)
def read_state(step_dir: pathlib.Path) -> dict:
    """The state tree saved in step_dir/state, on this process's first device (any topology)."""
    path = (step_dir / "state").absolute()  # Orbax reads array metadata from absolute paths only
    with ocp.StandardCheckpointer() as checkpointer:
        meta = checkpointer.metadata(path)
        meta = getattr(meta, "item_metadata", meta)
        if meta is None:
            raise RunError(
                f"cannot read the array metadata of checkpoint {path}; it may be damaged"
            )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta
        )
        return checkpointer.restore(path, target)


def read_checkpoint(path) -> tuple[int, dict]:
    """(step, {"params": ..., **model_state}) of a saved dlkit checkpoint, as host arrays."""
    directory, step = checkpoint_location(path)
    steps = _finished_steps(directory)
    step = (steps[-1] if steps else None) if step is None else step
    if step is None or step not in steps:
        raise ConfigError(f"init_from: no finished checkpoint in {directory}; train it first")
    restored = read_state(directory / str(step))
    tree = {"params": restored["params"], **(restored.get("model_state") or {})}
    return step, jax.tree.map(np.asarray, tree)


def read_weights(options, target: dict, model) -> tuple[str, dict]:
    """(a description, flat variables) of a PyTorch / safetensors weights file via dlkit.convert;
    the arrays keep the file's shapes (a 1000-way head is then skipped or reported)."""
    shapes = {k: tuple(np.shape(v)) for k, v in target.items()}
    sd = convert_io.read_state_dict(options.init_from)
    flat = pytorch.convert_state_dict(options.convert, sd, model, shapes, strict=False)
    return f"{options.init_from} (converted from the PyTorch {options.convert} layout)", flat


def read_source(options, target: dict, model=None) -> tuple[str, dict]:
    """(a description, flat {(collection, path): host array}) of options.init_from.

    The one place a source is read: a dlkit workdir / checkpoint folder, or a weights file
    (.pth/.pt/.safetensors) converted by name with options.convert for `model`.
    """
    if convert_io.is_weights_file(options.init_from):
        if not options.convert:
            raise ConfigError(
                f"init_from {options.init_from} is a weights file: set transfer.convert to its "
                'layout, the model name whose PyTorch twin wrote it (e.g. "resnet18")'
            )
        if model is None:
            raise ConfigError("init_from a weights file needs the model (init_from(..., model=))")
        return read_weights(options, target, model)
    if options.convert:
        raise ConfigError(
            f"transfer.convert {options.convert!r} reads weights files (.pth/.pt/.safetensors); "
            f"{options.init_from} is not one: unset transfer.convert"
        )
    step, tree = read_checkpoint(options.init_from)
    return f"{options.init_from} (step {step})", flatten(tree)


# ---------------------------------------------------------------------------- matching


def renamer(rules):
    """Rename rules ("regex->replacement" or pairs) -> path -> the first match's expansion."""
    compiled = [(re.compile(old), new) for old, new in rename_rules(rules)]

    def rename(path: str) -> str:
        for regex, repl in compiled:
            m = regex.fullmatch(path)
            if m:
                return m.expand(repl)
        return path

    return rename


def renamed(source: dict, rules) -> dict:
    """{(collection, new path): (source path, value)}; two paths onto one is a ConfigError."""
    rename, mapped = renamer(rules), {}
    for (col, path), value in source.items():
        new = (col, rename(path))
        if new in mapped:
            raise ConfigError(
                f"transfer.rename maps both {mapped[new][0]} and {path} to {new[1]}; fix the rules"
            )
        mapped[new] = (path, value)
    return mapped


def _shape_error(key, src, value) -> str:
    return (
        f"{key[0]}:{key[1]} is {tuple(np.shape(src))} in the checkpoint but "
        f"{tuple(np.shape(value))} in this model"
    )


def _match_one(key, value, mapped, skip):
    """(status, source path, problem) for one model path: loaded | skipped | fresh | missing."""
    if key not in mapped:
        fresh = matches(key[1], skip)
        return ("fresh", "", None) if fresh else ("missing", "", f"{key[0]}:{key[1]}")
    src_path, src = mapped[key]
    if matches(key[1], skip):
        return "skipped", src_path, None
    if np.shape(src) != np.shape(value):
        return "mismatched", src_path, _shape_error(key, src, value)
    return "loaded", src_path, None


def _check_fit(problems: dict, unused: list) -> None:
    """ConfigError naming the shape mismatches, or the missing and unused paths."""
    if problems["mismatched"]:
        raise ConfigError(
            "init_from: shapes differ: "
            + "; ".join(problems["mismatched"])
            + ". List these paths in transfer.skip to initialise them fresh"
        )
    missing = problems["missing"]
    if missing or unused:
        raise ConfigError(
            f"init_from: the checkpoint does not fit this model: {len(missing)} model paths are "
            f"not in it ({few(missing)}) and {len(unused)} checkpoint paths are unused "
            f"({few(unused)}); map them with transfer.rename or list them in transfer.skip"
        )


def match_variables(target: dict, source: dict, *, skip=(), rename=()) -> tuple[dict, list]:
    """(new flat variables, table rows) initialising flat `target` from flat `source` by path.

    Rows are (collection, path, shape, status, source path) with status loaded | skipped (in the
    checkpoint, re-initialised) | fresh (only in the model, listed in skip) | dropped.
    """
    mapped = renamed(source, rename)
    out, rows, problems = dict(target), [], {"missing": [], "mismatched": []}
    for key, value in target.items():
        status, src_path, problem = _match_one(key, value, mapped, skip)
        if problem:
            problems[status].append(problem)
            continue
        if status == "loaded":
            out[key] = mapped[key][1]
        rows.append((key[0], key[1], np.shape(value), status, src_path))
    extra = [k for k in mapped if k not in target]
    unused = [f"{c}:{p}" for (c, p) in extra if not matches(p, skip)]
    rows += [(c, p, np.shape(mapped[(c, p)][1]), "dropped", mapped[(c, p)][0]) for c, p in extra]
    _check_fit(problems, unused)
    return out, rows


def format_table(rows) -> str:
    """One line per (collection, module, status): its leaves with their shapes."""
    groups: dict = {}
    for col, path, shape, status, src in rows:
        module, _, leaf = path.rpartition("/")
        src_module = src.rpartition("/")[0] if src else ""
        renamed_from = f" <- {src_module}" if status == "loaded" and src_module != module else ""
        group = (col, module or "/", status, renamed_from)
        groups.setdefault(group, []).append(f"{leaf}{tuple(shape)}")
    lines = [f"{'collection':<12} {'module':<28} {'status':<8} leaves"]
    for (col, module, status, renamed_from), leaves in groups.items():
        lines.append(f"{col:<12} {module:<28} {status:<8} {', '.join(leaves)}{renamed_from}")
    counts = {s: sum(r[3] == s for r in rows) for s in STATUSES}
    lines.append(" ".join(f"{k}={v}" for k, v in counts.items()) + " (arrays)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the state


def _place_like(value, like):
    """value as an array with like's dtype, on like's sharding (if it has one)."""
    arr = jnp.asarray(value, dtype=like.dtype)
    sharding = getattr(like, "sharding", None)
    return jax.device_put(arr, sharding) if sharding is not None else arr


def init_from(state, options, model=None):
    """The step-0 state with params/model_state loaded from options.init_from (if set).

    `options` is a TransferOptions; its rename/skip say how checkpoint paths meet the model's;
    `model` (the state's module) is needed only to convert a foreign weights file.
    """
    if not options.init_from:
        return state
    target = flatten({"params": state.params, **state.model_state})
    label, source = read_source(options, target, model)
    new, rows = match_variables(target, source, skip=options.skip, rename=options.rename)
    variables = unflatten({k: _place_like(v, target[k]) for k, v in new.items()})
    params = variables.pop("params")
    if jax.process_index() == 0:
        log.info(f"init_from {label}:\n{format_table(rows)}")
    state = state.replace(params=params, model_state=variables, opt_state=state.tx.init(params))
    return ema.restart(state)  # the average starts at the loaded params
