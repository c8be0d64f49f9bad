"""Orbax checkpoints in workdir/checkpoints: train state, data-iterator position, config, assets.

Restores use an abstract target (shape/dtype/sharding structs of the current run's state), never
the saved device layout. A checkpoint written by a different run (config or shapes differ) is
refused with a message naming what differs, and is never overwritten.
"""

import contextlib
import errno
import json
import logging
import pathlib
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlkit.errors import ConfigError, RunError
from dlkit.train.options.diff import config_differences

log = logging.getLogger("dlkit")


def config_to_json(config) -> dict:
    """A RunOptions, ConfigDict or dict (None: {}) as plain JSON data (tuples become lists)."""
    if config is None:
        return {}
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=str))


def abstract_like(tree):
    """Shape/dtype/sharding structs of a pytree of arrays: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


class Damaged(Exception):
    """A saved step that cannot be read (missing, truncated or garbled files); says why."""


def _reason(e: BaseException) -> str:
    """The error's type and first line, without Orbax's pointer to TensorStore's details."""
    text = str(e).strip().splitlines()
    first = text[0].split(" See full TensorStore details")[0][:160] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _disk_error(e: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `e` (Orbax wraps its async errors), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        if "No space left on device" in str(e):
            return OSError(errno.ENOSPC, "No space left on device")
        e = e.__cause__ or e.__context__
    return None


def _shapes(tree) -> list[tuple]:
    """Sorted (shape, dtype) of a tree's leaves: what a restore target must agree with."""
    leaves = jax.tree.leaves(tree)
    return sorted((tuple(x.shape), str(jax.numpy.dtype(x.dtype))) for x in leaves)


def all_finite(tree) -> bool:
    """Whether every floating leaf of a pytree is finite (one compiled check, one host sync)."""
    jnp = jax.numpy
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return bool(jax.device_get(_all_finite(leaves))) if leaves else True


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
    # one program per tree structure: per-leaf eager ops compiled two programs per leaf shape
    return jax.numpy.all(jax.numpy.stack([jax.numpy.isfinite(x).all() for x in leaves]))


def digest(tree) -> int | None:
    """CRC-32 of every array's bytes (in tree order), or None when this process lacks some."""
    leaves = jax.tree.leaves(tree)
    if not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return None
    crc = 0
    for x in jax.device_get(leaves):
        crc = zlib.crc32(np.ascontiguousarray(x).view(np.uint8).reshape(-1), crc)
    return crc


class Checkpointer:
    """A thin wrapper over ocp.CheckpointManager with dlkit's items and safety checks.

    Saves commit atomically (Orbax writes a temporary directory, then renames it). On restore,
    a step that cannot be read is `Damaged`; `set_aside` moves it (or a half-written temporary
    directory) to checkpoints/damaged/, never deleting it. A full disk is a one-line RunError.
    """

    ITEMS = ("state", "data", "config", "assets")

    def __init__(
        self,
        directory,
        *,
        max_to_keep: int = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        self.directory = pathlib.Path(directory).absolute()
        self.set_aside_temporaries()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=async_save,
            save_interval_steps=save_interval_steps,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=self.ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Committed steps, newest first."""
        return sorted(self.manager.all_steps(), reverse=True)

    def save(self, step: int, state_tree, data_state: dict, config=None, assets=None, force=False):
        """Starts an (asynchronous) save of everything a run needs to resume at `step`."""
        data_state = {**data_state, "digest": digest(state_tree)}  # catches silent bit flips
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_tree),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config_to_json(config) if config is not None else {}),
            assets=ocp.args.JsonSave(assets or {}),
        )
        with self._disk_errors(f"saving checkpoints (by step {step})"):
            return self.manager.save(step, args=args, force=force)

    def wait(self) -> None:
        """Blocks until pending saves are committed; a failed save raises here."""
        with self._disk_errors("saving a checkpoint"):
            self.manager.wait_until_finished()
            self.manager.check_for_errors()

    @contextlib.contextmanager
    def _disk_errors(self, what: str):
        """Turns a full disk (however Orbax wraps it) into a one-line RunError."""
        try:
            yield
        except RunError:
            raise
        except Exception as e:
            full = _disk_error(e)
            if full is None:
                raise
            raise RunError(
                f"{what} failed: the disk holding {self.directory} is full ({full.strerror}); "
                "the older checkpoints are intact; free space and rerun the same command"
            ) from e

    def read_json(self, step: int, item: str) -> dict:
        """One JSON item (data, config or assets) of a saved step."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()})
        )
        return restored[item]

    def check_compatible(self, step: int, config) -> None:
        """Raises ConfigError naming every setting in which this run differs from the saved one."""
        try:
            saved = self.read_json(step, "config")
        except Exception as e:
            raise Damaged(f"its config cannot be read ({_reason(e)})") from e
        if not isinstance(saved, dict):
            raise Damaged("its config is not a JSON object")
        diffs = config_differences(saved, config_to_json(config))
        if diffs:
            raise ConfigError(
                f"{self.directory} holds step {step} of a different run: "
                + "; ".join(diffs)
                + ". Use a new workdir (--workdir) or the saved settings; nothing was overwritten."
            )

    def _check_shapes(self, step: int, state_tree) -> None:
        """ConfigError when saved shapes differ from the model's; Damaged when unreadable."""
        try:
            meta = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
            meta = getattr(meta, "item_metadata", meta)
            saved = _shapes(meta)
        except Exception as e:
            raise Damaged(f"its state metadata cannot be read ({_reason(e)})") from e
        if saved != _shapes(state_tree):
            raise ConfigError(
                f"checkpoint {self.directory} step {step} does not fit this model's state "
                "(other array shapes or dtypes). Use a new --workdir; nothing was overwritten."
            )

    def restore(self, step: int, state_tree) -> tuple[dict, dict]:
        """(state tree, data-iterator state) at `step`, shaped and placed like `state_tree`.

        ConfigError when the checkpoint belongs to another model; Damaged when it cannot be read.
        """
        self._check_shapes(step, state_tree)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_like(state_tree)),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:
            raise Damaged(f"its files cannot be read ({_reason(e)})") from e
        data = restored["data"]
        if not isinstance(data, dict) or "iterator" not in data or "window" not in data:
            raise Damaged("its data-iterator state is missing or garbled")
        if data.get("digest") is not None and data["digest"] != digest(restored["state"]):
            raise Damaged("its arrays do not match the checksum taken when it was saved")
        return restored["state"], data

    def set_aside(self, name: str) -> pathlib.Path:
        """Moves checkpoints/<name> to checkpoints/damaged/<name>[.N]; returns the new path."""
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        target, n = damaged / name, 1
        while target.exists():
            target, n = damaged / f"{name}.{n}", n + 1
        (self.directory / name).rename(target)
        if hasattr(self, "manager"):
            self.manager.reload()
        return target

    def set_aside_temporaries(self) -> list[pathlib.Path]:
        """Moves half-written temporary step directories (a save that died) to damaged/."""
        if jax.process_index() != 0 or not self.directory.is_dir():
            return []
        moved = []
        for tmp in sorted(self.directory.glob("*.orbax-checkpoint-tmp*")):
            moved.append(self.set_aside(tmp.name))
            warn(f"moved the half-written checkpoint {tmp.name} to {moved[-1].parent}")
        return moved

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()


def warn(message: str) -> None:
    """One warning, logged (process 0 only); a door shows it as "warning: ..." on stderr."""
    if jax.process_index() == 0:
        log.warning(message)


def locate(path) -> tuple[pathlib.Path, int | None]:
    """(checkpoint directory, step or None = latest) for a workdir, its checkpoints/ folder or
    one step folder (checkpoints/<step>): the one path convention of load/restore_latest."""
    path = pathlib.Path(path).expanduser().absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    if path.is_dir():
        return path, None
    if path.exists():  # e.g. run/metrics.jsonl: a file inside a run, not the run
        run = next((p for p in path.parents if (p / "checkpoints").is_dir()), path.parent)
        raise ConfigError(
            f"{path} is a file, not a run; give the training workdir ({run}), its checkpoints/ "
            "folder or a step folder"
        )
    raise ConfigError(
        f"{path} does not exist; give a training workdir, its checkpoints/ folder or a step folder"
    )


def _local_target(path):
    """Shape/dtype structs on this process's first device for a saved state (any topology).

    Orbax reads array metadata only from an absolute path (OCDBT); StandardCheckpointer.metadata
    of a relative one logs a warning and returns None, and a restore with that None target then
    insists on the saved device layout ("Topology mismatch detected"). So the path is made
    absolute, and unreadable metadata is an error rather than a silent fallback.
    """
    path = pathlib.Path(path).expanduser().absolute()
    try:
        meta = ocp.StandardCheckpointHandler().metadata(path)
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"cannot read the array metadata of checkpoint {path}: {e}") from e
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)


def restore_state_on_one_device(path):
    """The state tree saved at a step's `state` folder, on this process's first device."""
    path = pathlib.Path(path).expanduser().absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, _local_target(path))


def restore_latest(workdir, *, items=("config", "assets"), step=None) -> dict:
    """Reads the latest checkpoint (or `step`) without a target: {"step", item: ...}.

    workdir: a training workdir, its checkpoints/ folder or one step folder (see `locate`).
    The state comes back on this process's first device (whatever topology saved it: any device
    count, any host), for sampling and inspection; relative and absolute paths alike.
    """
    directory, at = locate(workdir)
    step = at if step is None else step
    manager = ocp.CheckpointManager(directory, item_names=Checkpointer.ITEMS)
    try:
        steps = manager.all_steps()
        step = manager.latest_step() if step is None else step
        if not steps:
            raise ConfigError(
                f"no checkpoints in {directory}; train first (dlkit.train.train_and_evaluate "
                "or experiments/train.py)"
            )
        if step not in steps:
            raise ConfigError(
                f"no checkpoint of step {step} in {directory}; it has {sorted(steps)}"
            )
        args = {i: ocp.args.JsonRestore() for i in items if i != "state"}
        if "state" in items:
            args["state"] = ocp.args.StandardRestore(_local_target(directory / str(step) / "state"))
        out = dict(manager.restore(step, args=ocp.args.Composite(**args)))
    finally:
        manager.close()
    return {"step": step, **out}
