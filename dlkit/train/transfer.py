"""Transfer learning: initialise from another run by parameter path, freeze by pattern, fine-tune.

Paths are "/"-joined names inside a collection ("conv_0/kernel", "bn_0/mean"); patterns are
regular expressions matched against the whole path (`re.fullmatch`).

- `config.init_from`: a workdir, its checkpoints/ folder or one step folder, or a PyTorch weights
  file (.pth/.pt/.safetensors) with `config.convert` naming its layout (a dlkit.convert model name,
  e.g. "resnet18"; see dlkit.convert.from_torch). On a fresh start the
  checkpoint's params and mutable collections (BatchNorm statistics) replace the model's by path;
  `config.init_rename` ("old_regex->new", applied to checkpoint paths) maps subtrees, and
  `config.init_skip` patterns keep the fresh initialisation (e.g. "head/.*" for a new classifier).
  Every other path must be found in both with equal shapes, else ConfigError naming them.
- `config.freeze`: params matching are trained by `optax.set_to_zero` inside
  `optax.multi_transform`; mutable state matching keeps its previous value bit for bit, and a
  BatchNorm whose statistics match ("<module>/mean") normalises with its running statistics
  (inference mode) in training too. This is done by wrapping the state's apply_fn, so the shared
  train step is unchanged.
- `config.backbone_lr_scale`: the learning rate of the trainable params not in `init_skip` (the
  pre-trained backbone) is scaled by it; the `init_skip` layers train at the full rate.
"""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlkit.errors import ConfigError


def patterns(value) -> tuple[str, ...]:
    """A config field (None, one str, or a sequence of str) as a tuple of regexes."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def matches(path: str, pats) -> bool:
    """True if any pattern matches the whole path."""
    return any(re.fullmatch(p, path) for p in pats)


def _key(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def path_str(key_path) -> str:
    """A jax key path as "a/b/c"."""
    return "/".join(_key(k) for k in key_path)


def flatten(variables: dict) -> dict:
    """{collection: tree} -> {(collection, "a/b"): leaf}."""
    out = {}
    for col, tree in variables.items():
        for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[(col, path_str(kp))] = leaf
    return out


def unflatten(flat: dict) -> dict:
    """The inverse of flatten: {(collection, "a/b"): leaf} -> {collection: nested dict}."""
    out: dict = {}
    for (col, path), leaf in flat.items():
        node = out.setdefault(col, {})
        *parents, last = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = leaf
    return out


# ---------------------------------------------------------------------------- init_from


def _checkpoint_location(path) -> tuple[pathlib.Path, int | None]:
    """(the Orbax manager directory, a step or None for the latest) for a user path."""
    path = pathlib.Path(path).expanduser().absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.is_dir() and path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    if path.is_dir():
        return path, None
    raise ConfigError(f"init_from: {path} does not exist; give a workdir or a checkpoint folder")


def read_checkpoint(path) -> tuple[int, dict]:
    """(step, {"params": ..., **model_state}) of a saved dlkit checkpoint, as host arrays."""
    import orbax.checkpoint as ocp

    from dlkit.train.checkpoint import Checkpointer, restore_state_on_one_device

    directory, step = _checkpoint_location(path)
    manager = ocp.CheckpointManager(directory, item_names=Checkpointer.ITEMS)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise ConfigError(f"init_from: no finished checkpoint in {directory}; train it first")
    finally:
        manager.close()
    restored = restore_state_on_one_device(directory / str(step) / "state")  # any device count
    tree = {"params": restored["params"], **(restored.get("model_state") or {})}
    return step, jax.tree.map(np.asarray, tree)


def read_weights_file(config, path, target: dict) -> tuple[str, dict]:
    """("converted <layout>", flat variables) from a PyTorch weights file via dlkit.convert; the
    shapes stay the file's (a 1000-way head is then skipped or reported by match_variables)."""
    from dlkit import models
    from dlkit.convert.io import read_state_dict
    from dlkit.convert.pytorch import convert_state_dict

    name = config.get("convert")
    if not name:
        raise ConfigError(
            f"init_from {path} is a weights file: set config.convert to its layout, the model "
            f'name whose PyTorch twin wrote it (e.g. "resnet18")'
        )
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    kwargs.setdefault("num_classes", 1)  # the head's size does not change where weights go
    model = models.get(name, **kwargs)
    shapes = {k: tuple(np.shape(v)) for k, v in target.items()}
    flat = convert_state_dict(name, read_state_dict(path), model, shapes, strict=False)
    return f"converted from the PyTorch {name} layout", flat


def _renamer(rules):
    """Compiles init_rename rules ("regex->replacement" or (regex, replacement)) to a function."""
    compiled = []
    for rule in patterns(rules):
        pair = rule.split("->", 1) if isinstance(rule, str) else tuple(rule)
        if len(pair) != 2:
            raise ConfigError(f"init_rename rule {rule!r} must be 'old_regex->replacement'")
        compiled.append((re.compile(pair[0].strip()), pair[1].strip()))

    def rename(path: str) -> str:
        for regex, repl in compiled:
            m = regex.fullmatch(path)
            if m:
                return m.expand(repl)
        return path

    return rename


def match_variables(target: dict, source: dict, *, skip=(), rename=()) -> tuple[dict, list]:
    """(new flat variables, table rows) initialising flat `target` from flat `source` by path.

    Rows are (collection, path, shape, status, source path) with status loaded | skipped (in the
    checkpoint, re-initialised) | fresh (only in the model, listed in skip) | dropped.
    """
    skip, rename_fn = patterns(skip), _renamer(rename)
    mapped: dict = {}
    for (col, path), value in source.items():
        new = (col, rename_fn(path))
        if new in mapped:
            raise ConfigError(
                f"init_rename maps both {mapped[new][0]} and {path} to {new[1]}; fix the rules"
            )
        mapped[new] = (path, value)
    out, rows, missing, mismatched = dict(target), [], [], []
    for key, value in target.items():
        col, path = key
        if matches(path, skip):
            status = "skipped" if key in mapped else "fresh"
            rows.append((col, path, np.shape(value), status, mapped.get(key, ("",))[0]))
        elif key not in mapped:
            missing.append(f"{col}:{path}")
        else:
            src_path, src = mapped[key]
            if np.shape(src) != np.shape(value):
                mismatched.append(
                    f"{col}:{path} is {tuple(np.shape(src))} in the checkpoint but "
                    f"{tuple(np.shape(value))} in this model"
                )
                continue
            out[key] = src
            rows.append((col, path, np.shape(value), "loaded", src_path))
    unused = [f"{c}:{p}" for (c, p) in mapped if (c, p) not in target and not matches(p, skip)]
    rows += [
        (c, p, np.shape(v[1]), "dropped", v[0])
        for (c, p), v in mapped.items()
        if (c, p) not in target and matches(p, skip)
    ]
    if mismatched:
        raise ConfigError(
            "init_from: shapes differ: "
            + "; ".join(mismatched)
            + ". List these paths in config.init_skip to initialise them fresh"
        )
    if missing or unused:
        raise ConfigError(
            f"init_from: the checkpoint does not fit this model: {len(missing)} model paths are "
            f"not in it ({_few(missing)}) and {len(unused)} checkpoint paths are unused "
            f"({_few(unused)}); map them with config.init_rename or list them in config.init_skip"
        )
    return out, rows


def _few(items, n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def format_table(rows) -> str:
    """One line per (collection, module, status): its leaves with their shapes."""
    groups: dict = {}
    for col, path, shape, status, src in rows:
        module, _, leaf = path.rpartition("/")
        src_module = src.rpartition("/")[0] if src else ""
        renamed = f" <- {src_module}" if status == "loaded" and src_module != module else ""
        groups.setdefault((col, module or "/", status, renamed), []).append(f"{leaf}{tuple(shape)}")
    lines = [f"{'collection':<12} {'module':<28} {'status':<8} leaves"]
    for (col, module, status, renamed), leaves in groups.items():
        lines.append(f"{col:<12} {module:<28} {status:<8} {', '.join(leaves)}{renamed}")
    counts = {s: sum(r[3] == s for r in rows) for s in ("loaded", "skipped", "fresh", "dropped")}
    lines.append(" ".join(f"{k}={v}" for k, v in counts.items()) + " (arrays)")
    return "\n".join(lines)


def init_from(config, state):
    """The step-0 state with params/model_state loaded from config.init_from (if set)."""
    source_path = config.get("init_from")
    if not source_path:
        return state
    if int(config.get("ensemble_size", 1) or 1) > 1:
        raise ConfigError("init_from with ensemble_size > 1 is not supported; train one model")
    from dlkit.convert.io import is_weights_file

    target = flatten({"params": state.params, **state.model_state})
    if is_weights_file(source_path):
        step, source = read_weights_file(config, source_path, target)
    else:
        step, source = read_checkpoint(source_path)
        source = flatten(source)
    new, rows = match_variables(
        target, source, skip=config.get("init_skip"), rename=config.get("init_rename")
    )

    def place(key, value):
        like = target[key]
        arr = jnp.asarray(value, dtype=like.dtype)
        sharding = getattr(like, "sharding", None)
        return jax.device_put(arr, sharding) if sharding is not None else arr

    variables = unflatten({k: place(k, v) for k, v in new.items()})
    params = variables.pop("params")
    if jax.process_index() == 0:
        where = step if isinstance(step, str) else f"step {step}"
        print(f"init_from {source_path} ({where}):\n{format_table(rows)}", flush=True)
    return state.replace(params=params, model_state=variables, opt_state=state.tx.init(params))


# ---------------------------------------------------------------------------- freezing


def param_labels(params, config):
    """A tree of "frozen" | "backbone" | "train" labels for optax.multi_transform."""
    freeze, skip = patterns(config.get("freeze")), patterns(config.get("init_skip"))
    scaled = (config.get("backbone_lr_scale") or 1.0) != 1.0

    def label(kp, _):
        path = path_str(kp)
        if matches(path, freeze):
            return "frozen"
        return "backbone" if scaled and not matches(path, skip) else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def wrap_optimizer(config, base: optax.GradientTransformation) -> optax.GradientTransformation:
    """base inside multi_transform (frozen: set_to_zero, backbone: base then scale) if asked."""
    scale = config.get("backbone_lr_scale") or 1.0
    if not patterns(config.get("freeze")) and scale == 1.0:
        return base
    if scale != 1.0 and not patterns(config.get("init_skip")):
        raise ConfigError(
            "backbone_lr_scale needs config.init_skip: the new layers (e.g. 'head/.*') that "
            "train at the full rate; everything else is the backbone"
        )
    if scale <= 0:
        raise ConfigError(f"backbone_lr_scale must be > 0, got {scale}; use config.freeze")
    transforms = {
        "train": base,
        "frozen": optax.set_to_zero(),
        "backbone": optax.chain(base, optax.scale(scale)),
    }
    return optax.multi_transform(transforms, lambda p: param_labels(p, config))


def _bn_inference(freeze):
    """A method interceptor: BatchNorm layers whose "<path>/mean" is frozen use running stats."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        frozen = (
            context.method_name == "__call__"
            and isinstance(module, nn.BatchNorm)
            and matches("/".join(module.scope.path) + "/mean", freeze)
        )
        if not frozen or module.use_running_average is None:
            if frozen:
                kwargs = {**kwargs, "use_running_average": True}
            return next_fun(*args, **kwargs)
        old = module.use_running_average
        object.__setattr__(module, "use_running_average", True)  # this call only
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "use_running_average", old)

    return interceptor


def keep_frozen(new_state: dict, old_variables: dict, freeze) -> dict:
    """new_state with every leaf whose path matches `freeze` taken from old_variables."""

    def pick(kp, new):
        col, path = _key(kp[0]), path_str(kp[1:])
        if col not in old_variables or not matches(path, freeze):
            return new  # e.g. "intermediates": created by this call, nothing to keep
        old = old_variables[col]
        for entry in kp[1:]:
            old = old[_key(entry)]
        return old

    return jax.tree_util.tree_map_with_path(pick, dict(new_state))


def frozen_apply_fn(apply_fn, freeze):
    """apply_fn where frozen BatchNorms run in inference mode and frozen state never changes."""
    freeze = patterns(freeze)
    interceptor = _bn_inference(freeze)

    def apply(variables, *args, mutable=False, **kwargs):
        with nn.intercept_methods(interceptor):
            out = apply_fn(variables, *args, mutable=mutable, **kwargs)
        if not mutable:
            return out
        y, new_state = out
        return y, keep_frozen(new_state, variables, freeze)

    return apply


def prepare_state(config, state, dataset=None):
    """Checks config.freeze against the model and wraps apply_fn for frozen state (if any);
    sets the embedding from config.init_vectors (if set) for dataset's tokenizer."""
    if config.get("init_vectors"):
        state = init_vectors(config, state, dataset)
    freeze = patterns(config.get("freeze"))
    if not freeze:
        return state
    paths = [path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
    for p in freeze:
        if not any(re.fullmatch(p, path) for path in paths):
            raise ConfigError(
                f"freeze pattern {p!r} matches no parameter; the model's are: {_few(paths, 8)}"
            )
    if all(matches(path, freeze) for path in paths):
        raise ConfigError(f"config.freeze {list(freeze)} matches every parameter; nothing trains")
    return state.replace(apply_fn=frozen_apply_fn(state.apply_fn, freeze))


# ---------------------------------------------------------------------------- word vectors


def init_vectors(config, state, dataset):
    """state with params[config.init_vectors_param] (V, D) built from saved word2vec vectors
    (dlkit.train.embeddings.embedding_table) for the dataset's tokenizer vocabulary."""
    from dlkit.data.tokenizers import Tokenizer
    from dlkit.train.embeddings import embedding_table

    assets = getattr(dataset, "assets", None) or {}
    if "tokenizer" not in assets:
        raise ConfigError("init_vectors needs a text dataset (its assets hold no tokenizer)")
    param = config.get("init_vectors_param") or "embed/embedding"
    flat = flatten({"params": state.params})
    if ("params", param) not in flat:
        paths = [p for _, p in flat]
        raise ConfigError(f"init_vectors_param {param!r} is not a parameter: {_few(paths, 8)}")
    like = flat[("params", param)]
    tokenizer = Tokenizer.from_dict(assets["tokenizer"])
    table, report = embedding_table(tokenizer, config.init_vectors, seed=config.seed)
    if table.shape != like.shape:
        raise ConfigError(
            f"init_vectors: the table is {table.shape} (vocabulary, vector size) but {param} is "
            f"{tuple(like.shape)}; set the model's embedding size to {table.shape[1]}"
        )
    flat[("params", param)] = jnp.asarray(table, like.dtype)
    params = unflatten(flat)["params"]
    if jax.process_index() == 0:
        print(
            f"init_vectors {config.init_vectors} -> {param}: {report['matched']} of "
            f"{report['vocab_size']} tokens found (missing e.g. {report['missing_examples'][:5]})",
            flush=True,
        )
    return state.replace(params=params, opt_state=state.tx.init(params))
