"""Typed run options: the experiment config parsed once, at the door, into frozen dataclasses.

`RunOptions.from_config(config)` migrates old flat keys (`migrate`), checks every key and value
and fills every default in this one module; library code takes these options, not a ConfigDict.

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

A field whose metadata says `resumable` may change when a run resumes (`resumable_keys()`); any
other difference makes a saved checkpoint another run's (`config_differences`).
"""

import dataclasses
import difflib
import re
import signal
import types
import typing
from collections.abc import Mapping

from ml_collections import ConfigDict, FrozenConfigDict, config_dict

from dlkit import models
from dlkit.errors import ConfigError, choose
from dlkit.train import objectives
from dlkit.train.step import StepOptions

PARALLEL_KINDS = ("sharded", "fsdp", "pmap", "none")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "sgd_scratch", "adam_scratch")
NONFINITE_POLICIES = ("stop", "skip_step")  # dlkit.train.step.StepOptions.nonfinite
PREEMPTION_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

# ---------------------------------------------------------------------------- migration

# Old flat key -> its place in a section; each works for one more release with a message.
MOVED_KEYS = {
    "grad_accum_steps": "step.grad_accum_steps",
    "dp": "step.dp",
    "mixed_precision": "step.mixed_precision",
    "nonfinite": "step.nonfinite",
    "steps_per_call": "parallel.steps_per_call",
    "ensemble_size": "parallel.ensemble_size",
    "init_from": "transfer.init_from",
    "convert": "transfer.convert",
    "init_skip": "transfer.skip",
    "init_rename": "transfer.rename",
    "freeze": "transfer.freeze",
    "backbone_lr_scale": "transfer.backbone_lr_scale",
    "init_vectors": "transfer.vectors",
    "init_vectors_param": "transfer.vectors_param",
    "checkpoint_every_steps": "checkpoint.every_steps",
    "max_checkpoints_to_keep": "checkpoint.max_to_keep",
    "preemption_signals": "checkpoint.preemption_signals",
}
RETIRED_KEYS = {"parallel.mesh_shape": "nothing reads it"}


def _is_section(value) -> bool:
    """A mapping, ConfigDict or FrozenConfigDict (the latter two are not Mappings)."""
    return isinstance(value, Mapping) or hasattr(value, "to_dict")


def _plain(config) -> dict:
    """A ConfigDict, FrozenConfigDict or mapping as nested plain dicts (a fresh copy)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return {k: _plain(v) if _is_section(v) else v for k, v in dict(config).items()}


def _moved_message(old: str, new: str) -> str:
    suffix = ".*" if old == "dp" else ""
    return (
        f"config key {old}{suffix} is deprecated: use {new}{suffix} "
        f"(--config.{new}{suffix}); the old key works for one more release"
    )


def _move(out: dict, old: str, new: str) -> bool:
    """Moves out[old] to its section in place; False for an unset placeholder (None)."""
    value = out.pop(old)
    if isinstance(value, dict):  # dp: its set fields join step.dp's
        value = {k: v for k, v in value.items() if v is not None} or None
    if value is None:
        return False
    section, _, key = new.partition(".")
    if not isinstance(out.get(section), dict):
        out[section] = {}
    if isinstance(value, dict) and isinstance(out[section].get(key), dict):
        value = {**out[section][key], **value}
    out[section][key] = value
    return True


def _retire(out: dict) -> list[str]:
    """Drops retired keys in place; their messages."""
    messages = []
    for dotted, why in RETIRED_KEYS.items():
        section, _, key = dotted.partition(".")
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section].pop(key)
            messages.append(f"config key {dotted} is retired ({why}); it is ignored")
    return messages


def migrate(config) -> tuple[dict, list[str]]:
    """(config as nested plain dicts with old flat keys moved into sections, one line per move).

    Pure and idempotent; used for user configs and for configs saved inside old checkpoints. A
    flat key set to None (an unset placeholder) is dropped silently; a set one wins over the
    section's value.
    """
    out = _plain(config)
    moved = [old for old in MOVED_KEYS if old in out and _move(out, old, MOVED_KEYS[old])]
    return out, [_moved_message(old, MOVED_KEYS[old]) for old in moved] + _retire(out)


# ---------------------------------------------------------------------------- value checks


def _resumable(default=dataclasses.MISSING, **kwargs):
    """A dataclass field that a rerun may change without making the checkpoint another run's."""
    return dataclasses.field(default=default, metadata={"resumable": True}, **kwargs)


def _check_keys(section: Mapping, known, where: str) -> None:
    """ConfigError for the first key of section not in known (with a did-you-mean)."""
    for key in section:
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            did = f" (did you mean {where}{hint[0]}?)" if hint else ""
            raise ConfigError(
                f"unknown config key {where}{key}{did}; the keys there are: {', '.join(known)}"
            )


def _get(section: Mapping, key: str, default):
    value = section.get(key, default)
    return default if value is None else value


def _int(section, key, default, where, minimum):
    value = _get(section, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"config {where}{key} must be an integer >= {minimum}, got {value!r}; "
            f"set --config.{where}{key}"
        )
    return value


def _float(section, key, default, where, minimum=None, above=None):
    value = _get(section, key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and above is not None:
        ok = value > above
    if not ok:
        bound = (
            f" >= {minimum}" if minimum is not None else f" > {above}" if above is not None else ""
        )
        raise ConfigError(
            f"config {where}{key} must be a number{bound}, got {value!r}; set --config.{where}{key}"
        )
    return float(value)


def _bool(section, key, default, where):
    value = _get(section, key, default)
    if value not in (True, False):
        raise ConfigError(f"config {where}{key} must be True or False, got {value!r}")
    return bool(value)


def _str(section, key, default, where):
    value = _get(section, key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"config {where}{key} must be a string, got {value!r}")
    return value or default


def _patterns(section, key, where) -> tuple[str, ...]:
    """None, one regex or a sequence of regexes -> a tuple of compiled-checked regexes."""
    value = _get(section, key, ())
    pats = (value,) if isinstance(value, str) else tuple(value)
    for p in pats:
        try:
            re.compile(p)
        except (re.error, TypeError) as e:
            raise ConfigError(
                f"config {where}{key}: {p!r} is not a regular expression ({e})"
            ) from None
    return pats


def _section(config: Mapping, name: str) -> Mapping:
    value = config.get(name)
    if value is None:
        return {}
    if not _is_section(value):
        raise ConfigError(f"config {name} must be a section (a ConfigDict), got {value!r}")
    return value


def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# ---------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class DPOptions:
    """DP-SGD: per-example clipping to clip_norm, Gaussian noise of std noise_multiplier C."""

    enabled: bool = False
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0

    @classmethod
    def from_config(cls, section: Mapping) -> "DPOptions":
        """config.step.dp -> DPOptions."""
        where = "step.dp."
        _check_keys(section, _field_names(cls), where)
        enabled = _bool(section, "enabled", False, where)
        clip = _float(section, "clip_norm", 1.0, where, above=0.0 if enabled else None)
        noise = _float(section, "noise_multiplier", 1.0, where, minimum=0.0)
        return cls(enabled, clip, noise)


@dataclasses.dataclass(frozen=True)
class TrainStepOptions:
    """config.step: what one optimizer step computes."""

    grad_accum_steps: int = 1
    dp: DPOptions = DPOptions()
    mixed_precision: bool = False
    nonfinite: str = _resumable("stop")  # stop | skip_step

    @classmethod
    def from_config(cls, section: Mapping, *, batch_size: int) -> "TrainStepOptions":
        """config.step -> TrainStepOptions; grad_accum_steps must divide batch_size."""
        where = "step."
        _check_keys(section, _field_names(cls), where)
        accum = _int(section, "grad_accum_steps", 1, where, 1)
        if batch_size % accum:
            raise ConfigError(
                f"config step.grad_accum_steps {accum} must divide batch_size {batch_size}"
            )
        dp = DPOptions.from_config(_section(section, "dp"))
        if dp.enabled and accum > 1:
            raise ConfigError("step.dp.enabled with step.grad_accum_steps > 1 is not supported")
        nonfinite = choose(
            {p: p for p in NONFINITE_POLICIES}, _get(section, "nonfinite", "stop"), "step.nonfinite"
        )
        return cls(accum, dp, _bool(section, "mixed_precision", False, where), nonfinite)

    def to_step_options(self):
        """The static options of dlkit.train.step.train_step."""
        return StepOptions(
            grad_accum_steps=self.grad_accum_steps,
            dp_clip_norm=self.dp.clip_norm if self.dp.enabled else None,
            dp_noise_multiplier=self.dp.noise_multiplier if self.dp.enabled else 0.0,
            compute_dtype="bfloat16" if self.mixed_precision else None,
            nonfinite=self.nonfinite,
        )


@dataclasses.dataclass(frozen=True)
class ParallelOptions:
    """config.parallel: devices, hosts, steps per dispatch and ensembles."""

    kind: str = _resumable("sharded")  # sharded | fsdp | pmap | none
    cpu_devices: int = _resumable(0)  # 0: auto (dlkit.train.cpu_layout); N: N CPU devices
    steps_per_call: int = _resumable(1)  # train steps per dispatch (lax.scan); same results
    ensemble_size: int = 1  # K members, seeds seed .. seed + K - 1, one vmapped step
    coordinator_address: str | None = _resumable(None)  # multi-host "host:port"
    num_processes: int | None = _resumable(None)
    process_id: int | None = _resumable(None)

    @classmethod
    def from_config(cls, section: Mapping) -> "ParallelOptions":
        """config.parallel -> ParallelOptions; a coordinator needs num_processes and process_id."""
        where = "parallel."
        _check_keys(section, _field_names(cls), where)
        kind = choose(
            {k: k for k in PARALLEL_KINDS}, _get(section, "kind", "sharded"), where + "kind"
        )
        address = _str(section, "coordinator_address", None, where)
        procs, pid = section.get("num_processes"), section.get("process_id")
        if address:
            if procs is None or pid is None:
                raise ConfigError(
                    "parallel.coordinator_address needs parallel.num_processes and "
                    "parallel.process_id (flags --num_processes, --process_id)"
                )
            procs = _int(section, "num_processes", 1, where, 1)
            pid = _int(section, "process_id", 0, where, 0)
            if pid >= procs:
                raise ConfigError(f"parallel.process_id {pid} must be < num_processes {procs}")
        return cls(
            kind=kind,
            cpu_devices=_int(section, "cpu_devices", 0, where, 0),
            steps_per_call=_int(section, "steps_per_call", 1, where, 1),
            ensemble_size=_int(section, "ensemble_size", 1, where, 1),
            coordinator_address=address,
            num_processes=procs if address else None,
            process_id=pid if address else None,
        )


def rename_rules(value, where: str = "transfer.") -> tuple[tuple[str, str], ...]:
    """transfer.rename: "old_regex->replacement" strings or (regex, replacement) pairs -> pairs."""
    rules = []
    for rule in (value,) if isinstance(value, str) else tuple(value or ()):
        pair = rule.split("->", 1) if isinstance(rule, str) else tuple(rule)
        if len(pair) != 2:
            raise ConfigError(
                f"config {where}rename rule {rule!r} must be 'old_regex->replacement'"
            )
        try:
            re.compile(pair[0].strip())
        except re.error as e:
            raise ConfigError(
                f"config {where}rename rule {rule!r}: bad regular expression ({e})"
            ) from None
        rules.append((pair[0].strip(), pair[1].strip()))
    return tuple(rules)


@dataclasses.dataclass(frozen=True)
class TransferOptions:
    """config.transfer: start from another run (by parameter path), freeze, scale, word vectors."""

    init_from: str | None = _resumable(None)  # a workdir, its checkpoints/ or one step folder
    convert: str | None = _resumable(None)  # a converter name for a foreign weights file
    rename: tuple[tuple[str, str], ...] = ()  # (old_regex, replacement) on checkpoint paths
    skip: tuple[str, ...] = ()  # regexes of paths kept fresh (e.g. "head/.*")
    freeze: tuple[str, ...] = ()  # regexes of params (and state) not trained
    backbone_lr_scale: float = 1.0  # lr factor for trainable params not in skip
    vectors: str | None = None  # word2vec vectors.npz (or its workdir)
    vectors_param: str = "embed/embedding"  # the table the vectors set

    @classmethod
    def from_config(cls, section: Mapping) -> "TransferOptions":
        """config.transfer -> TransferOptions; backbone_lr_scale != 1 needs skip (new layers)."""
        where = "transfer."
        _check_keys(section, _field_names(cls), where)
        skip = _patterns(section, "skip", where)
        scale = _float(section, "backbone_lr_scale", 1.0, where, above=0.0)
        if scale != 1.0 and not skip:
            raise ConfigError(
                "transfer.backbone_lr_scale needs transfer.skip: the new layers (e.g. 'head/.*') "
                "that train at the full rate; everything else is the backbone"
            )
        init_from, convert = (
            _str(section, "init_from", None, where),
            _str(section, "convert", None, where),
        )
        if convert and not init_from:
            raise ConfigError("transfer.convert names how to read transfer.init_from; set both")
        return cls(
            init_from=init_from,
            convert=convert,
            rename=rename_rules(_get(section, "rename", ()), where),
            skip=skip,
            freeze=_patterns(section, "freeze", where),
            backbone_lr_scale=scale,
            vectors=_str(section, "vectors", None, where),
            vectors_param=_str(section, "vectors_param", "embed/embedding", where),
        )


def _signal_name(value) -> str:
    """A signal's name from its name or number; ConfigError with a did-you-mean otherwise."""
    if isinstance(value, int) and value in {s.value for s in signal.Signals}:
        return signal.Signals(value).name
    names = {s.name: s.name for s in signal.Signals if not s.name.startswith("SIG_")}
    return choose(names, value, "signal in checkpoint.preemption_signals")


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """config.checkpoint: when to save, how many to keep, which signals save and stop."""

    every_steps: int = _resumable(500)  # 0: only at the end
    max_to_keep: int = _resumable(3)
    preemption_signals: tuple[str, ...] = _resumable(PREEMPTION_SIGNALS)

    @classmethod
    def from_config(cls, section: Mapping) -> "CheckpointOptions":
        """config.checkpoint -> CheckpointOptions (signal names as in the signal module)."""
        where = "checkpoint."
        _check_keys(section, _field_names(cls), where)
        sigs = _get(section, "preemption_signals", PREEMPTION_SIGNALS)
        sigs = (sigs,) if isinstance(sigs, str | int) else tuple(sigs)
        return cls(
            every_steps=_int(section, "every_steps", 500, where, 0),
            max_to_keep=_int(section, "max_to_keep", 3, where, 1),
            preemption_signals=tuple(_signal_name(s) for s in sigs),
        )


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
    """config.optimizer: the update rule, its learning-rate schedule and gradient clipping."""

    name: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip_norm: float = 0.0  # 0: off
    b1: float = 0.9
    b2: float = 0.999

    @classmethod
    def from_config(cls, section: Mapping) -> "OptimizerOptions":
        """config.optimizer -> OptimizerOptions; names checked against dlkit.train.optim."""
        where = "optimizer."
        _check_keys(section, _field_names(cls), where)
        name = choose({n: n for n in OPTIMIZER_NAMES}, _get(section, "name", "adam"), "optimizer")
        schedule = choose(
            {s: s for s in SCHEDULES}, _get(section, "schedule", "constant"), "schedule"
        )
        return cls(
            name=name,
            learning_rate=_float(section, "learning_rate", 1e-3, where, minimum=0.0),
            schedule=schedule,
            warmup_steps=_int(section, "warmup_steps", 0, where, 0),
            momentum=_float(section, "momentum", 0.9, where, minimum=0.0),
            weight_decay=_float(section, "weight_decay", 1e-4, where, minimum=0.0),
            grad_clip_norm=_float(section, "grad_clip_norm", 0.0, where, minimum=0.0),
            b1=_float(section, "b1", 0.9, where, minimum=0.0),
            b2=_float(section, "b2", 0.999, where, minimum=0.0),
        )


@dataclasses.dataclass(frozen=True)
class EmaOptions:
    """config.ema: an exponential moving average of the params (dlkit.train.ema); 0: off."""

    decay: float = 0.0  # ema <- ema + (1 - decay) (params - ema) after every optimizer step

    @classmethod
    def from_config(cls, section: Mapping) -> "EmaOptions":
        """config.ema -> EmaOptions; 0 <= decay < 1."""
        where = "ema."
        _check_keys(section, _field_names(cls), where)
        decay = _float(section, "decay", 0.0, where, minimum=0.0)
        if decay >= 1.0:
            raise ConfigError(
                f"config ema.decay must be in [0, 1) (0: off; e.g. 0.999), got {decay!r}; "
                "set --config.ema.decay"
            )
        return cls(decay)


@dataclasses.dataclass(frozen=True)
class ProfileOptions:
    """config.profile: a jax.profiler trace of steps start_step .. start_step + num_steps - 1."""

    start_step: int = _resumable(0)
    num_steps: int = _resumable(0)  # 0: off

    @classmethod
    def from_config(cls, section: Mapping) -> "ProfileOptions":
        """config.profile -> ProfileOptions (dlkit.train.profiler)."""
        where = "profile."
        _check_keys(section, _field_names(cls), where)
        return cls(
            start_step=_int(section, "start_step", 0, where, 0),
            num_steps=_int(section, "num_steps", 0, where, 0),
        )


def _frozen(value):
    """Nested dicts/lists -> FrozenConfigDict/tuples, so equal configs compare equal."""
    if _is_section(value):
        return FrozenConfigDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """config.model: a registry name and the factory's keyword arguments."""

    name: str = "mlp"
    kwargs: FrozenConfigDict = FrozenConfigDict({})

    @classmethod
    def from_config(cls, section: Mapping) -> "ModelOptions":
        """config.model -> ModelOptions; the name is checked against dlkit.models."""
        name = _get(section, "name", "mlp")
        choose({n: n for n in models.names()}, name, "model")
        return cls(name, _frozen({k: v for k, v in section.items() if k != "name"}))

    def factory_kwargs(self, num_classes: int) -> dict:
        """The factory's keyword arguments; num_classes defaults to the dataset's."""
        return {"num_classes": num_classes, **_plain(self.kwargs)}


TOP_LEVEL_KEYS = (
    "seed",
    "loss",
    "batch_size",
    "eval_batch_size",
    "num_train_steps",
    "log_every_steps",
    "eval_every_steps",
    "progress_bar",
    "model",
    "data",
    "optimizer",
    "step",
    "parallel",
    "transfer",
    "checkpoint",
    "ema",
    "profile",
)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The whole config of one run, parsed once; sections are the options above."""

    seed: int = 0
    loss: str = "cross_entropy"
    batch_size: int = 64
    eval_batch_size: int = 256
    num_train_steps: int = _resumable(1000)
    log_every_steps: int = _resumable(100)
    eval_every_steps: int = _resumable(500)
    progress_bar: bool = _resumable(True)
    model: ModelOptions = ModelOptions()
    data: FrozenConfigDict = dataclasses.field(
        default=FrozenConfigDict({"name": "digits"}),
        metadata={"resumable_keys": ("dir", "tfds_dir", "path")},  # where, not what
    )
    optimizer: OptimizerOptions = OptimizerOptions()
    step: TrainStepOptions = TrainStepOptions()
    parallel: ParallelOptions = ParallelOptions()
    transfer: TransferOptions = TransferOptions()
    checkpoint: CheckpointOptions = CheckpointOptions()
    ema: EmaOptions = EmaOptions()
    profile: ProfileOptions = ProfileOptions()
    deprecations: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def from_config(cls, config) -> "RunOptions":
        """A ConfigDict (or dict) -> RunOptions; old flat keys are migrated (see deprecations)."""
        c, messages = migrate(config)
        _check_keys(c, TOP_LEVEL_KEYS, "")
        batch_size = _int(c, "batch_size", 64, "", 1)
        options = cls(
            seed=_int(c, "seed", 0, "", 0),
            loss=choose(
                {n: n for n in objectives.OBJECTIVES}, _get(c, "loss", "cross_entropy"), "loss"
            ),
            batch_size=batch_size,
            eval_batch_size=_int(c, "eval_batch_size", 256, "", 1),
            num_train_steps=_int(c, "num_train_steps", 1000, "", 0),
            log_every_steps=_int(c, "log_every_steps", 100, "", 0),
            eval_every_steps=_int(c, "eval_every_steps", 500, "", 0),
            progress_bar=_bool(c, "progress_bar", True, ""),
            model=ModelOptions.from_config(_section(c, "model")),
            data=_frozen(_section(c, "data") or {"name": "digits"}),
            optimizer=OptimizerOptions.from_config(_section(c, "optimizer")),
            step=TrainStepOptions.from_config(_section(c, "step"), batch_size=batch_size),
            parallel=ParallelOptions.from_config(_section(c, "parallel")),
            transfer=TransferOptions.from_config(_section(c, "transfer")),
            checkpoint=CheckpointOptions.from_config(_section(c, "checkpoint")),
            ema=EmaOptions.from_config(_section(c, "ema")),
            profile=ProfileOptions.from_config(_section(c, "profile")),
            deprecations=tuple(messages),
        )
        _check_across(options)
        return options

    @classmethod
    def of(cls, config) -> "RunOptions":
        """config itself if it is a RunOptions, else RunOptions.from_config(config)."""
        return config if isinstance(config, RunOptions) else cls.from_config(config)

    def to_dict(self) -> dict:
        """The options as a nested JSON-able config (every default filled); parses back equal."""
        return as_dict(self)

    def with_seed(self, seed: int) -> "RunOptions":
        """The same options with another seed (an ensemble member)."""
        return dataclasses.replace(self, seed=seed)


def _check_across(options: RunOptions) -> None:
    """Checks that span sections."""
    if options.transfer.init_from and options.parallel.ensemble_size > 1:
        raise ConfigError(
            "transfer.init_from with parallel.ensemble_size > 1 is not supported; train one model"
        )


# ---------------------------------------------------------------------------- resume checks


def _walk_fields(cls, prefix=""):
    """(dotted key, field) for every leaf field of an options dataclass, sections recursed."""
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        if dataclasses.is_dataclass(f.type):
            yield from _walk_fields(f.type, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def resumable_keys() -> frozenset[str]:
    """Dotted config keys a rerun may change without making the checkpoint another run's."""
    keys = set()
    for dotted, f in _walk_fields(RunOptions):
        if f.metadata.get("resumable"):
            keys.add(dotted)
        keys.update(f"{dotted}.{k}" for k in f.metadata.get("resumable_keys", ()))
    return frozenset(keys)


def as_dict(value):
    """Options -> nested plain JSON-able dicts (tuples as lists; model kwargs beside its name)."""
    if isinstance(value, ModelOptions):
        return {"name": value.name, **as_dict(value.kwargs)}
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return {f.name: as_dict(getattr(value, f.name)) for f in fields if f.compare}
    if _is_section(value):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [as_dict(v) for v in value]
    return value


def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {dotted key: leaf}."""
    out: dict = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def canonical(config) -> dict:
    """{dotted key: value} of a config with defaults filled (parsed), for comparing runs.

    A config that no longer parses (e.g. saved by an older dlkit) is compared as migrated.
    """
    try:
        return _flat(RunOptions.from_config(config).to_dict())
    except ConfigError:
        return _flat(as_dict(migrate(config)[0]))


def config_differences(saved, current) -> list[str]:
    """'key (saved x, now y)' for every non-resumable setting in which two configs differ."""
    a, b, skip = canonical(saved), canonical(current), resumable_keys()
    keys = sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
    return [f"{k} (saved {a.get(k, '<missing>')!r}, now {b.get(k, '<missing>')!r})" for k in keys]


# ---------------------------------------------------------------------------- default config


def _placeholder_type(f: dataclasses.Field):
    """The type of an Optional field (`str | None` -> str), else None."""
    if isinstance(f.type, types.UnionType) or typing.get_origin(f.type) is typing.Union:
        kinds = [t for t in typing.get_args(f.type) if t is not type(None)]
        return kinds[0] if len(kinds) == 1 else None
    return None


def _section_config(cls) -> ConfigDict:
    """A ConfigDict of an options class's defaults; Optional fields as typed placeholders."""
    c = ConfigDict()
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not f.compare:
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, ModelOptions | FrozenConfigDict):  # model, data: free-form
            c[f.name] = ConfigDict(as_dict(value))
        elif dataclasses.is_dataclass(value):
            c[f.name] = _section_config(type(value))
        elif value is None:
            c[f.name] = config_dict.placeholder(_placeholder_type(f))
        else:
            c[f.name] = value
    return c


def defaults() -> ConfigDict:
    """Every typed section with its defaults (the one place they live); model and data hold
    their names only (their other fields belong to the model and the dataset)."""
    return _section_config(RunOptions)


def add_flat_placeholders(c: ConfigDict) -> ConfigDict:
    """c with every moved flat key as an unset placeholder (one release), so flags such as
    --config.grad_accum_steps=4 still reach a locked config; migrate() moves what is set."""
    for old, new in MOVED_KEYS.items():
        section, _, key = new.partition(".")
        target = dataclasses.fields(RunOptions)
        cls = next(f.type for f in target if f.name == section)
        field = next(f for f in dataclasses.fields(cls) if f.name == key)
        if dataclasses.is_dataclass(field.type):  # dp: a section of placeholders
            c[old] = ConfigDict(
                {
                    g.name: config_dict.placeholder(type(getattr(field.type(), g.name)))
                    for g in dataclasses.fields(field.type)
                }
            )
        else:
            kind = _placeholder_type(field) or type(getattr(cls(), key))
            c[old] = config_dict.placeholder(kind)
    return c
