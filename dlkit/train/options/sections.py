"""The config's sections as frozen dataclasses: each default, bound and choice is written once,
in its field (checked by dlkit.train.options.parse); `check()` holds what spans fields.

To add a section, e.g. `ema`: a frozen dataclass subclassing Section, WHERE = "ema.", fields such
as `decay: float = option(0.0, minimum=0.0)`, and `ema: EMAOptions = EMAOptions()` in RunOptions;
parsing, defaults in default_config(), to_dict, resume diffing follow. Choices are read from the
registry that implements them (a new parallel.kind: add it to dlkit.train.parallel.KINDS).
"""

import dataclasses
import re
import signal

from ml_collections import FrozenConfigDict

from dlkit import models
from dlkit.errors import ConfigError, choose
from dlkit.train import objectives, optim
from dlkit.train.options.migrate import migrate
from dlkit.train.options.parse import (
    Section,
    as_dict,
    bound_error,
    frozen,
    option,
    parse_section,
    patterns,
    plain,
    section,
)
from dlkit.train.parallel import KINDS as PARALLEL_KINDS
from dlkit.train.step import NONFINITE_POLICIES, StepOptions


@dataclasses.dataclass(frozen=True)
class DPOptions(Section):
    """DP-SGD: per-example clipping to clip_norm, Gaussian noise of std noise_multiplier C."""

    WHERE = "step.dp."
    enabled: bool = False
    clip_norm: float = 1.0  # > 0 when enabled
    noise_multiplier: float = option(1.0, minimum=0.0)

    def check(self, **_) -> None:
        if self.enabled and not self.clip_norm > 0.0:
            raise bound_error(self.WHERE + "clip_norm", self.clip_norm, above=0.0)


@dataclasses.dataclass(frozen=True)
class TrainStepOptions(Section):
    """config.step: what one optimizer step computes."""

    WHERE = "step."
    grad_accum_steps: int = option(1, minimum=1)
    dp: DPOptions = DPOptions()
    mixed_precision: bool = False
    nonfinite: str = option("stop", choices=NONFINITE_POLICIES, resumable=True)

    def check(self, batch_size: int | None = None, **_) -> None:
        """grad_accum_steps divides batch_size (when given); DP-SGD without accumulation."""
        accum = self.grad_accum_steps
        if batch_size is not None and batch_size % accum:
            raise ConfigError(
                f"config step.grad_accum_steps {accum} must divide batch_size {batch_size}"
            )
        if self.dp.enabled and accum > 1:
            raise ConfigError("step.dp.enabled with step.grad_accum_steps > 1 is not supported")

    def to_step_options(self) -> StepOptions:
        """The static options of dlkit.train.step.train_step."""
        return StepOptions(
            grad_accum_steps=self.grad_accum_steps,
            dp_clip_norm=self.dp.clip_norm if self.dp.enabled else None,
            dp_noise_multiplier=self.dp.noise_multiplier if self.dp.enabled else 0.0,
            compute_dtype="bfloat16" if self.mixed_precision else None,
            nonfinite=self.nonfinite,
        )


@dataclasses.dataclass(frozen=True)
class ParallelOptions(Section):
    """config.parallel: devices, hosts, steps per dispatch and ensembles."""

    WHERE = "parallel."
    kind: str = option("sharded", choices=PARALLEL_KINDS, resumable=True)
    cpu_devices: int = option(0, minimum=0, resumable=True)  # 0: auto (train.cpu_layout)
    steps_per_call: int = option(1, minimum=1, resumable=True)  # steps per dispatch (lax.scan)
    ensemble_size: int = option(1, minimum=1)  # K members, seeds seed .. seed + K - 1, vmapped
    coordinator_address: str | None = option(None, resumable=True)  # multi-host "host:port"
    num_processes: int | None = option(None, minimum=1, resumable=True)
    process_id: int | None = option(None, minimum=0, resumable=True)

    def check(self, **_) -> None:
        """A coordinator needs num_processes and process_id, process_id < num_processes."""
        if not self.coordinator_address:
            return
        procs, pid = self.num_processes, self.process_id
        if procs is None or pid is None:
            raise ConfigError(
                "parallel.coordinator_address needs parallel.num_processes and "
                "parallel.process_id (flags --num_processes, --process_id)"
            )
        if pid >= procs:
            raise ConfigError(f"parallel.process_id {pid} must be < num_processes {procs}")


def rename_rules(value, where: str = "transfer.rename") -> tuple[tuple[str, str], ...]:
    """transfer.rename: "old_regex->replacement" strings or (regex, replacement) pairs -> pairs."""
    rules = []
    for rule in (value,) if isinstance(value, str) else tuple(value or ()):
        pair = rule.split("->", 1) if isinstance(rule, str) else tuple(rule)
        if len(pair) != 2:
            raise ConfigError(f"config {where} rule {rule!r} must be 'old_regex->replacement'")
        try:
            re.compile(pair[0].strip())
        except re.error as e:
            raise ConfigError(
                f"config {where} rule {rule!r}: bad regular expression ({e})"
            ) from None
        rules.append((pair[0].strip(), pair[1].strip()))
    return tuple(rules)


@dataclasses.dataclass(frozen=True)
class TransferOptions(Section):
    """config.transfer: start from another run (by parameter path), freeze, scale, word vectors."""

    WHERE = "transfer."
    init_from: str | None = option(None, resumable=True)  # a workdir, checkpoints/ or a step
    convert: str | None = option(None, resumable=True)  # a converter for a foreign weights file
    rename: tuple[tuple[str, str], ...] = option((), parse=rename_rules)  # on checkpoint paths
    skip: tuple[str, ...] = option((), parse=patterns)  # regexes of paths kept fresh ("head/.*")
    freeze: tuple[str, ...] = option((), parse=patterns)  # regexes of params (and state) fixed
    backbone_lr_scale: float = option(1.0, above=0.0)  # lr factor for trainables not in skip
    vectors: str | None = None  # word2vec vectors.npz (or its workdir)
    vectors_param: str = "embed/embedding"  # the table the vectors set

    def check(self, **_) -> None:
        """backbone_lr_scale != 1 needs skip (the new layers); convert needs init_from."""
        if self.backbone_lr_scale != 1.0 and not self.skip:
            raise ConfigError(
                "transfer.backbone_lr_scale needs transfer.skip: the new layers (e.g. 'head/.*') "
                "that train at the full rate; everything else is the backbone"
            )
        if self.convert and not self.init_from:
            raise ConfigError("transfer.convert names how to read transfer.init_from; set both")


def signal_names(value, where: str = "checkpoint.preemption_signals") -> tuple[str, ...]:
    """Signal names or numbers (one or a sequence) -> names; ConfigError with a did-you-mean."""
    names = {s.name: s.name for s in signal.Signals if not s.name.startswith("SIG_")}
    numbers = {s.value: s.name for s in signal.Signals}
    values = (value,) if isinstance(value, str | int) else tuple(value)
    return tuple(
        numbers[v]
        if isinstance(v, int) and v in numbers
        else choose(names, v, f"signal in {where}")
        for v in values
    )


@dataclasses.dataclass(frozen=True)
class CheckpointOptions(Section):
    """config.checkpoint: when to save, how many to keep, which signals save and stop."""

    WHERE = "checkpoint."
    every_steps: int = option(500, minimum=0, resumable=True)  # 0: only at the end
    max_to_keep: int = option(3, minimum=1, resumable=True)
    preemption_signals: tuple[str, ...] = option(
        ("SIGTERM", "SIGINT", "SIGUSR1"), parse=signal_names, resumable=True
    )


@dataclasses.dataclass(frozen=True)
class OptimizerOptions(Section):
    """config.optimizer: the update rule, its learning-rate schedule and gradient clipping."""

    WHERE = "optimizer."
    name: str = option("adam", choices=optim.RULES, label="optimizer")
    learning_rate: float = option(1e-3, minimum=0.0)
    schedule: str = option("constant", choices=optim.SCHEDULES, label="schedule")
    warmup_steps: int = option(0, minimum=0)
    momentum: float = option(0.9, minimum=0.0)
    weight_decay: float = option(1e-4, minimum=0.0)
    grad_clip_norm: float = option(0.0, minimum=0.0)  # 0: off
    b1: float = option(0.9, minimum=0.0)
    b2: float = option(0.999, minimum=0.0)


@dataclasses.dataclass(frozen=True)
class EmaOptions(Section):
    """config.ema: an exponential moving average of the params (dlkit.train.ema); 0: off."""

    WHERE = "ema."
    decay: float = option(0.0, minimum=0.0)  # ema <- ema + (1 - decay) (params - ema) per step

    def check(self, **_) -> None:
        if self.decay >= 1.0:
            raise ConfigError(
                f"config ema.decay must be in [0, 1) (0: off; e.g. 0.999), got {self.decay!r}; "
                "set --config.ema.decay"
            )


@dataclasses.dataclass(frozen=True)
class ProfileOptions(Section):
    """config.profile: a jax.profiler trace of steps start_step .. start_step + num_steps - 1."""

    WHERE = "profile."
    start_step: int = option(0, minimum=0, resumable=True)
    num_steps: int = option(0, minimum=0, resumable=True)  # 0: off


@dataclasses.dataclass(frozen=True)
class ModelOptions(Section):
    """config.model: a registry name and the factory's keyword arguments (beside the name)."""

    WHERE = "model."
    name: str = option("mlp", choices=models.names, label="model")
    kwargs: FrozenConfigDict = option(FrozenConfigDict({}), spread=True)

    def factory_kwargs(self, num_classes: int | None = None) -> dict:
        """The factory's keyword arguments; num_classes (when given) unless the section sets it."""
        given = {} if num_classes is None else {"num_classes": num_classes}
        return {**given, **plain(self.kwargs)}


DEFAULT_DATA = {"name": "digits"}


def _data(value, where: str) -> FrozenConfigDict:
    """config.data: the dataset's own fields, read-only (dlkit.data checks them)."""
    return frozen(section(value, where) or DEFAULT_DATA)


@dataclasses.dataclass(frozen=True)
class RunOptions(Section):
    """The whole config of one run, parsed once; sections are the options above."""

    seed: int = option(0, minimum=0)
    loss: str = option("cross_entropy", choices=objectives.OBJECTIVES)
    batch_size: int = option(64, minimum=1)
    eval_batch_size: int = option(256, minimum=1)
    num_train_steps: int = option(1000, minimum=0, resumable=True)
    log_every_steps: int = option(100, minimum=0, resumable=True)
    eval_every_steps: int = option(500, minimum=0, resumable=True)
    progress_bar: bool = option(True, resumable=True)
    model: ModelOptions = ModelOptions()
    data: FrozenConfigDict = option(
        frozen(DEFAULT_DATA), parse=_data, resumable=("dir", "tfds_dir", "path")
    )  # resumable: where the data is, not what it is
    optimizer: OptimizerOptions = OptimizerOptions()
    step: TrainStepOptions = TrainStepOptions()
    parallel: ParallelOptions = ParallelOptions()
    transfer: TransferOptions = TransferOptions()
    checkpoint: CheckpointOptions = CheckpointOptions()
    ema: EmaOptions = EmaOptions()
    profile: ProfileOptions = ProfileOptions()
    deprecations: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def from_config(cls, config=None, **_) -> "RunOptions":
        """A ConfigDict (or dict) -> RunOptions; old keys are migrated (see deprecations)."""
        c, messages = migrate({} if config is None else config)
        options = parse_section(cls, c, "")
        return dataclasses.replace(options, deprecations=tuple(messages))

    def check(self, **_) -> None:
        """Checks that span sections."""
        self.step.check(batch_size=self.batch_size)
        if self.transfer.init_from and self.parallel.ensemble_size > 1:
            raise ConfigError(
                "transfer.init_from with parallel.ensemble_size > 1 is not supported; "
                "train one model"
            )

    def to_dict(self) -> dict:
        """The options as a nested JSON-able config (every default filled); parses back equal."""
        return as_dict(self)

    def with_seed(self, seed: int) -> "RunOptions":
        """The same options with another seed (an ensemble member)."""
        return dataclasses.replace(self, seed=seed)
