"""PmapRunner: parallel.kind "pmap", the shared train step as a per-device program (jax.pmap).

Each device runs `dlkit.train.step.train_step` on its rows of the batch with
`StepOptions.axis_name = "data"`: gradient and metric sums are `psum`-ed and model state
`pmean`-ed over the axis, dropout keys are `fold_in(step key, device index)`, and every BatchNorm
normalises with statistics over all devices (`synced_apply_fn`: a method interceptor runs each
BatchNorm without an axis name as a clone with `axis_name="data"`, bound to the same scope; the
models are unchanged). The state enters every device whole (`in_axes=None`: each device holds a
replica) and comes back whole (`out_axes=None`: the replicas are equal, since each device applies
the same summed gradients), so the state between calls is the canonical layout that checkpoints
hold: a pmap run resumes bitwise on the same devices and restores on any kind or device count.
Batches are split on the host into (devices, rows, ...) blocks. One process; no ensembles.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh

from dlkit.data import pad_batch
from dlkit.errors import ConfigError
from dlkit.train import step as steps
from dlkit.train.options.sections import RunOptions
from dlkit.train.parallel import AXIS, global_batch, make_mesh, put, state_shardings


def _syncing(axis_name: str):
    """An interceptor: a BatchNorm without an axis name runs as a clone that syncs over it."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.BatchNorm):
            return next_fun(*args, **kwargs)
        if module.axis_name is not None:
            return next_fun(*args, **kwargs)
        clone = module.clone(parent=module.scope, axis_name=axis_name)  # same variables
        return clone(*args, **kwargs)

    return interceptor


def synced_apply_fn(apply_fn, axis_name: str = AXIS):
    """apply_fn whose BatchNorm statistics are over every device of the pmap axis."""
    interceptor = _syncing(axis_name)

    def apply(*args, **kwargs):
        with nn.intercept_methods(interceptor):
            return apply_fn(*args, **kwargs)

    return apply


def _per_device(fn):
    """fn(state, batch) with BatchNorm synced; the state keeps its own apply_fn."""

    def run(state, batch):
        out = fn(state.replace(apply_fn=synced_apply_fn(state.apply_fn)), batch)
        if isinstance(out, tuple):  # train: (state, sums)
            return out[0].replace(apply_fn=state.apply_fn), out[1]
        return out

    return run


def _eval_sums(state, batch, *, objective):
    """The eval step's metric sums over every device's rows."""
    return lax.psum(steps.eval_step(state, batch, objective=objective), AXIS)


def _blocks(batch: dict, n: int) -> dict:
    """(B, ...) -> (n, B / n, ...): each device's rows, split on the host."""
    return {k: np.asarray(v).reshape(n, -1, *np.shape(v)[1:]) for k, v in batch.items()}


def _stacked_blocks(batches: list[dict], n: int) -> dict:
    """K batches (B, ...) -> (K, n, B / n, ...)."""
    return {k: np.stack([_blocks(b, n)[k] for b in batches]) for k in batches[0]}


def check_pmap(options: RunOptions, n: int) -> None:
    """ConfigError for what kind "pmap" does not run: several processes, ensembles, a batch that
    does not divide among the devices."""
    if jax.process_count() > 1:
        raise ConfigError(
            "parallel.kind 'pmap' runs on one process; use --config.parallel.kind=sharded "
            "across hosts"
        )
    if options.parallel.ensemble_size > 1:
        raise ConfigError(
            "parallel.ensemble_size > 1 is not offered with parallel.kind 'pmap'; use "
            "--config.parallel.kind=sharded for ensembles"
        )
    if options.batch_size % n:
        raise ConfigError(
            f"batch_size {options.batch_size} must divide evenly over {n} devices (pmap); "
            "change --config.batch_size"
        )


def pmap_devices(options: RunOptions, devices: int | None) -> int | None:
    """The device count: `devices`, else parallel.cpu_devices on CPU, or under auto (0) the most
    CPU devices (up to all) that the batch divides among; None: every device."""
    if devices is not None or jax.default_backend() != "cpu":
        return devices
    available = len(jax.devices())
    if options.parallel.cpu_devices:
        return min(options.parallel.cpu_devices, available)
    return next(n for n in range(available, 0, -1) if options.batch_size % n == 0)


@dataclasses.dataclass(frozen=True)
class PmapRunner:
    """Train and eval functions under jax.pmap; the interface of dlkit.train.runner.Runner."""

    mesh: Mesh
    train_one: Callable  # (state, batch (n, B / n, ...)) -> (state, sums); donates the state
    train_many: Callable  # (state, batches (K, n, B / n, ...)) -> (state, sums over K steps)
    eval_step: Callable  # (state, batch (n, rows, ...)) -> sums

    @classmethod
    def create(cls, options: RunOptions, objective, devices: int | None = None) -> "PmapRunner":
        """The pmap runner of a RunOptions: every device, or the first `devices`."""
        check_pmap(options, 1)  # one process, no ensemble, before any mesh
        mesh = make_mesh("pmap", pmap_devices(options, devices))
        check_pmap(options, mesh.devices.size)
        step_options = dataclasses.replace(options.step.to_step_options(), axis_name=AXIS)
        step = functools.partial(steps.train_step, objective=objective, options=step_options)
        many = functools.partial(steps.multi_step, step_fn=step)
        evaluate = functools.partial(_eval_sums, objective=objective)
        pmap = functools.partial(
            jax.pmap, axis_name=AXIS, out_axes=None, devices=list(mesh.devices.flat)
        )
        return cls(
            mesh=mesh,
            train_one=pmap(_per_device(step), in_axes=(None, 0), donate_argnums=0),
            train_many=pmap(_per_device(many), in_axes=(None, 1), donate_argnums=0),
            eval_step=pmap(evaluate, in_axes=(None, 0)),
        )

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    def place(self, state):
        """A fresh or host state -> replicated on every device of the pmap (the canonical
        layout, which pmap takes without a copy)."""
        return put(state, state_shardings(state, self.mesh))

    def train(self, state, local_batches: list[dict]):
        """len(local_batches) steps (one dispatch) -> (state, sums)."""
        n = self.devices
        if len(local_batches) == 1:
            batch = global_batch(_blocks(local_batches[0], n), self.mesh)
            return self.train_one(state, batch)
        batches = global_batch(_stacked_blocks(local_batches, n), self.mesh, stacked=True)
        return self.train_many(state, batches)

    def eval(self, state, batch: dict) -> dict:
        """Metric sums on one eval batch, padded (masked) to a multiple of the devices."""
        n = self.devices
        size = -(-len(batch["targets"]) // n) * n
        return self.eval_step(state, global_batch(_blocks(pad_batch(batch, size), n), self.mesh))
