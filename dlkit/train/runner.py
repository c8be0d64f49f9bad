"""Runner: the jitted train and eval functions of one run on one device mesh.

Every kind but "pmap" (dlkit.train.pmap_runner) is `jax.jit` over the 1-D `data` mesh
(dlkit.train.parallel): the global batch split along `data`, the state replicated ("sharded",
"none": one device) or split ("fsdp"). Inside the jitted step the new state is constrained to
`state_shardings` of its own shapes, so the functions are built once per runner and fit any state
(jit's own cache keys on the state's structure).
BatchNorm statistics are computed over the global batch: one array, whatever the device count.
`train` and `eval` call (so trace) the jitted functions inside `jax.set_mesh(mesh)`: an op whose
kernel XLA cannot partition (the oneDNN conv, dlkit.kernels.cpu.dispatch) reads the mesh there
and runs per batch shard.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dlkit.data import pad_batch
from dlkit.errors import ConfigError
from dlkit.train import ensemble
from dlkit.train import step as steps
from dlkit.train.options.sections import RunOptions
from dlkit.train.parallel import global_batch, make_mesh, put, state_shardings
from dlkit.train.pmap_runner import PmapRunner


def steps_stack(batches: list[dict]) -> dict:
    """K batches -> one dict of arrays (K, B, ...)."""
    return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def _laid_out(fn, mesh: Mesh, fsdp: bool):
    """fn(state, batch) -> (state, sums) with the state in its canonical layout, sums replicated."""

    def run(state, batch):
        state, sums = fn(state, batch)
        state = jax.lax.with_sharding_constraint(state, state_shardings(state, mesh, fsdp))
        return state, jax.lax.with_sharding_constraint(sums, NamedSharding(mesh, P()))

    return run


def step_functions(options: RunOptions, objective) -> tuple[Callable, Callable]:
    """(train step, eval step) of a RunOptions, unjitted: its step options and ensemble size."""
    step = functools.partial(
        steps.train_step, objective=objective, options=options.step.to_step_options()
    )
    evaluate = functools.partial(steps.eval_step, objective=objective)
    if options.parallel.ensemble_size > 1:
        return ensemble.ensemble_train_step(step), ensemble.ensemble_eval_step(objective)
    return step, evaluate


def _check_batch(batch_size: int, mesh: Mesh) -> None:
    n, procs = mesh.devices.size, jax.process_count()
    if batch_size % n or batch_size % procs:
        raise ConfigError(
            f"batch_size {batch_size} must divide evenly over {n} devices "
            f"({procs} processes); change --config.batch_size"
        )


@dataclasses.dataclass(frozen=True)
class Runner:
    """Train and eval functions for one run on one mesh; see the module docstring."""

    mesh: Mesh
    fsdp: bool
    train_one: Callable  # (state, batch (B, ...)) -> (state, sums); donates the state
    train_many: Callable  # (state, batches (K, B, ...)) -> (state, sums over K steps)
    eval_step: Callable  # (state, batch) -> sums

    @classmethod
    def create(cls, options: RunOptions, objective, devices: int | None = None) -> "Runner":
        """The runner of a RunOptions: its mesh (every device, or the first `devices`), step
        options and ensemble size; kind "pmap" gets dlkit.train.pmap_runner's PmapRunner."""
        if options.parallel.kind == "pmap":
            return PmapRunner.create(options, objective, devices)
        mesh = make_mesh(options.parallel.kind, devices)
        _check_batch(options.batch_size, mesh)
        fsdp = options.parallel.kind == "fsdp"
        step, evaluate = step_functions(options, objective)
        many = functools.partial(steps.multi_step, step_fn=step)
        return cls(
            mesh=mesh,
            fsdp=fsdp,
            train_one=jax.jit(_laid_out(step, mesh, fsdp), donate_argnums=0),
            train_many=jax.jit(_laid_out(many, mesh, fsdp), donate_argnums=0),
            eval_step=jax.jit(evaluate, out_shardings=NamedSharding(mesh, P())),
        )

    def place(self, state):
        """A fresh or host state -> the canonical layout (on the mesh, replicated or FSDP)."""
        return put(state, state_shardings(state, self.mesh, fsdp=self.fsdp))

    def train(self, state, local_batches: list[dict]):
        """len(local_batches) steps (one dispatch) on this process's batches -> (state, sums)."""
        if len(local_batches) == 1:
            batch = global_batch(local_batches[0], self.mesh)
            with jax.set_mesh(self.mesh):
                state, sums = self.train_one(state, batch)
        else:
            stacked = global_batch(steps_stack(local_batches), self.mesh, stacked=True)
            with jax.set_mesh(self.mesh):
                state, sums = self.train_many(state, stacked)
        return state, _host_sums(sums)

    def eval(self, state, batch: dict) -> dict:
        """Metric sums on one global eval batch (every process holds it whole)."""
        n, procs, index = self.mesh.devices.size, jax.process_count(), jax.process_index()
        size = -(-len(batch["targets"]) // n) * n  # padded (masked) to a multiple of devices
        rows = size // procs
        local = {k: v[index * rows : (index + 1) * rows] for k, v in pad_batch(batch, size).items()}
        batch = global_batch(local, self.mesh)
        with jax.set_mesh(self.mesh):
            return _host_sums(self.eval_step(state, batch))


def _host_sums(sums):
    """Multi-process: sums as numpy (each process holds the replicated value whole)."""
    return jax.tree.map(np.asarray, sums) if jax.process_count() > 1 else sums
