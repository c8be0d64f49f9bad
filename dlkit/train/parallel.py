"""Placement and sharding: a 1-D `data` mesh over every device of every process, batches split
along it, state replicated or FSDP-split, and `jax.distributed` start-up.

`ParallelOptions.kind`: "sharded" (default; batch split along `data`, state replicated), "fsdp"
(params, optimizer and model state also split along `data`) or "none" (one device). The jitted
functions that use this layout are dlkit.train.runner's. Checkpoints always hold this canonical
layout (whole arrays), so they restore on any number of devices.
"""

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dlkit.errors import ConfigError, choose

AXIS = "data"
KINDS = ("sharded", "fsdp", "pmap", "none")  # config.parallel.kind's choices (dlkit.train.options)
FSDP_MIN_SIZE = 1024  # leaves with fewer elements stay replicated


def _cluster_env() -> bool:
    """True under a launcher that jax.distributed.initialize() can read (SLURM, Open MPI, env)."""
    env = os.environ
    sizes = [env[k] for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE") if k in env]
    return bool(env.get("JAX_COORDINATOR_ADDRESS")) or any(int(n) > 1 for n in sizes)


def initialize_distributed(options) -> bool:
    """jax.distributed.initialize from ParallelOptions' coordinator_address / num_processes /
    process_id, else from the cluster environment; a no-op on one host. Returns whether the
    runtime is multi-process."""
    if jax.distributed.is_initialized():
        return True
    if options.coordinator_address:
        jax.distributed.initialize(
            options.coordinator_address, options.num_processes, options.process_id
        )
        return True
    if _cluster_env():
        jax.distributed.initialize()
        return True
    return False


def make_mesh(kind: str = "sharded", devices: int | None = None) -> Mesh:
    """A 1-D Mesh named `data` over every device (every process's), the first `devices` of them
    (one process), or device 0 for "none"."""
    choose({k: k for k in KINDS}, kind, "parallel.kind")
    if kind == "none" or devices is not None:
        if jax.process_count() > 1:
            raise ConfigError("parallel.kind 'none' runs on one device; use sharded with hosts")
        return Mesh(np.array(jax.devices()[: 1 if kind == "none" else devices]), (AXIS,))
    return Mesh(np.array(jax.devices()), (AXIS,))


def fsdp_spec(shape: tuple, n: int) -> P:
    """Split the largest axis divisible by n along `data`; small or indivisible: replicated."""
    dims = [i for i, d in enumerate(shape) if d % n == 0]
    if n == 1 or not dims or math.prod(shape) < FSDP_MIN_SIZE:
        return P()
    spec = [None] * len(shape)
    spec[max(dims, key=lambda i: shape[i])] = AXIS
    return P(*spec)


def state_shardings(tree, mesh: Mesh, fsdp: bool = False):
    """NamedSharding per leaf: replicated, or fsdp_spec for every leaf (params, opt, model)."""
    n = mesh.devices.size
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, n) if fsdp else P()), tree)


def _host(x) -> np.ndarray:
    """The whole value of a replicated or host-local array, as numpy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def put(tree, shardings):
    """Places a pytree of whole (host-equal on every process) arrays with the given shardings."""

    def one(x, sharding):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x  # already placed
        value = _host(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(one, tree, shardings)


def global_batch(local: dict, mesh: Mesh, *, stacked: bool = False) -> dict:
    """This process's rows (b, ...) or (K, b, ...) -> global arrays split along `data`."""
    sharding = NamedSharding(mesh, P(None, AXIS) if stacked else P(AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
