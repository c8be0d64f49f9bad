"""Orbax checkpoints in workdir/checkpoints: train state, data-iterator position, config, assets.

Restores use an abstract target (shape/dtype/sharding structs of the current run's state), never
the saved device layout. A checkpoint written by a different run (config or shapes differ) is
refused with a message naming what differs, and is never overwritten.
"""

import json
import pathlib

import jax
import orbax.checkpoint as ocp

from dlkit.errors import ConfigError

# Settings a rerun may change without making the checkpoint someone else's.
RESUMABLE_KEYS = frozenset(
    {
        "num_train_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "max_checkpoints_to_keep",
        "progress_bar",
        "data.dir",
        "data.tfds_dir",
        "data.path",
        "init_from",
        "parallel.coordinator_address",
        "parallel.num_processes",
        "parallel.process_id",
        "parallel.mesh_shape",
        "parallel.kind",
        "parallel.cpu_devices",
        "steps_per_call",
    }
)


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_to_json(config) -> dict:
    """A ConfigDict (or dict, or None: {}) as plain JSON data (tuples become lists)."""
    if config is None:
        return {}
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=str))


def config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between two configs, ignoring RESUMABLE_KEYS."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_KEYS and a.get(k) != b.get(k))
    return [f"{k} (saved {a.get(k, '<missing>')!r}, now {b.get(k, '<missing>')!r})" for k in keys]


def abstract_like(tree):
    """Shape/dtype/sharding structs of a pytree of arrays: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


class Checkpointer:
    """A thin wrapper over ocp.CheckpointManager with dlkit's items and safety checks."""

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
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=async_save,
            save_interval_steps=save_interval_steps,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=self.ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state_tree, data_state: dict, config, assets: dict, force=False):
        """Starts an (asynchronous) save of everything a run needs to resume at `step`."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_tree),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config_to_json(config)),
            assets=ocp.args.JsonSave(assets),
        )
        return self.manager.save(step, args=args, force=force)

    def read_json(self, step: int, item: str) -> dict:
        """One JSON item (data, config or assets) of a saved step."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()})
        )
        return restored[item]

    def check_compatible(self, step: int, config) -> None:
        """Raises ConfigError naming every setting in which this run differs from the saved one."""
        diffs = config_differences(self.read_json(step, "config"), config_to_json(config))
        if diffs:
            raise ConfigError(
                f"{self.directory} holds step {step} of a different run: "
                + "; ".join(diffs)
                + ". Use a new workdir (--workdir) or the saved settings; nothing was overwritten."
            )

    def restore(self, step: int, state_tree) -> tuple[dict, dict]:
        """(state tree, data-iterator state) at `step`, shaped and placed like `state_tree`."""
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_like(state_tree)),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"checkpoint {self.directory} step {step} does not fit this model's state: "
                f"{str(e).splitlines()[0]}. Use a new workdir (--workdir); nothing was overwritten."
            ) from e
        return restored["state"], restored["data"]

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


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
    raise ConfigError(
        f"{path} does not exist; give a training workdir, its checkpoints/ folder or a step folder"
    )


def _local_target(path):
    """Shape/dtype structs on this process's first device for a saved state (any topology)."""
    meta = ocp.StandardCheckpointer().metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)


def restore_latest(workdir, *, items=("config", "assets"), step=None) -> dict:
    """Reads the latest checkpoint (or `step`) without a target: {"step", item: ...}.

    workdir: a training workdir, its checkpoints/ folder or one step folder (see `locate`).
    The state comes back on this process's first device (whatever topology saved it), for
    sampling and inspection.
    """
    directory, at = locate(workdir)
    step = at if step is None else step
    manager = ocp.CheckpointManager(directory, item_names=Checkpointer.ITEMS)
    steps = manager.all_steps()
    step = manager.latest_step() if step is None else step
    if not steps or step not in steps:
        manager.close()
        if not steps:
            raise ConfigError(
                f"no checkpoints in {directory}; train first (dlkit.train.train_and_evaluate "
                "or experiments/train.py)"
            )
        raise ConfigError(f"no checkpoint of step {step} in {directory}; it has {sorted(steps)}")
    args = {i: ocp.args.JsonRestore() for i in items if i != "state"}
    if "state" in items:
        args["state"] = ocp.args.StandardRestore(_local_target(directory / str(step) / "state"))
    out = dict(manager.restore(step, args=ocp.args.Composite(**args)))
    manager.close()
    return {"step": step, **out}
