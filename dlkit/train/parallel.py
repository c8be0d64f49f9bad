"""Devices and hosts: a `data` mesh, sharded batches, replicated or FSDP-sharded state, the pmap
path, multi-step dispatch, ensembles and `jax.distributed` start-up.

config.parallel.kind: "sharded" (default; jit over a Mesh, batch split along `data`, state
replicated), "fsdp" (params, optimizer and model state also split along `data`), "pmap"
(`jax.pmap` + `lax.psum`, BatchNorm statistics synchronised across devices) or "none" (one device).
Checkpoints always hold the canonical layout (whole arrays, no device axis), so they restore on
any number of devices.
"""

import copy
import dataclasses
import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dlkit.errors import ConfigError
from dlkit.train import step as steps
from dlkit.train import vmap

AXIS = "data"
KINDS = ("sharded", "fsdp", "pmap", "none")
FSDP_MIN_SIZE = 1024  # leaves with fewer elements stay replicated


def _cluster_env() -> bool:
    """True under a launcher that jax.distributed.initialize() can read (SLURM, Open MPI, env)."""
    env = os.environ
    return bool(
        env.get("JAX_COORDINATOR_ADDRESS")
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    )


def initialize_distributed(parallel_cfg) -> bool:
    """jax.distributed.initialize from coordinator_address/num_processes/process_id, else from
    the cluster environment; a no-op on one host. Returns whether the runtime is multi-process."""
    if jax.distributed.is_initialized():
        return True
    address = parallel_cfg.get("coordinator_address") if parallel_cfg else None
    if address:
        if parallel_cfg.get("num_processes") is None or parallel_cfg.get("process_id") is None:
            raise ConfigError(
                "parallel.coordinator_address needs parallel.num_processes and "
                "parallel.process_id (flags --num_processes, --process_id)"
            )
        jax.distributed.initialize(
            address, int(parallel_cfg.num_processes), int(parallel_cfg.process_id)
        )
        return True
    if _cluster_env():
        jax.distributed.initialize()
        return True
    return False


def make_mesh(kind: str = "sharded") -> Mesh:
    """A 1-D Mesh named `data` over every device (every process's), or device 0 for "none"."""
    if kind not in KINDS:
        raise ConfigError(f"unknown parallel.kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind == "none":
        if jax.process_count() > 1:
            raise ConfigError("parallel.kind 'none' runs on one device; use sharded with hosts")
        return Mesh(np.array(jax.devices()[:1]), (AXIS,))
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


def _sync_batchnorm(next_fun, args, kwargs, context):
    """Interceptor: BatchNorm without axis_name computes its statistics across the pmap axis."""
    module = context.module
    if isinstance(module, nn.BatchNorm) and module.axis_name is None:
        object.__setattr__(module, "axis_name", AXIS)  # a fresh module per trace; frozen field
    return next_fun(*args, **kwargs)


def _with_synced_batchnorm(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with nn.intercept_methods(_sync_batchnorm):
            return fn(*args, **kwargs)

    return wrapped


def _first(x):
    """Device 0's copy of a pmap output (n, ...) -> (...)."""
    a = x.addressable_data(0)
    return a[0] if a.ndim == x.ndim else a


@dataclasses.dataclass
class Runner:
    """Train and eval functions for one config on one mesh; see the module docstring."""

    kind: str
    mesh: Mesh
    objective: object
    options: steps.StepOptions
    ensemble_size: int = 1
    _shardings: object = None
    _fns: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config, objective) -> "Runner":
        parallel = config.get("parallel") or {}
        kind = parallel.get("kind", "sharded")
        mesh = make_mesh(kind)
        n, procs = mesh.devices.size, jax.process_count()
        if config.batch_size % n or config.batch_size % procs:
            raise ConfigError(
                f"batch_size {config.batch_size} must divide evenly over {n} devices "
                f"({procs} processes); change --config.batch_size"
            )
        size = int(config.get("ensemble_size", 1) or 1)
        if size > 1 and kind == "pmap":
            raise ConfigError("ensemble_size > 1 runs with parallel.kind sharded, fsdp or none")
        return cls(kind, mesh, objective, steps.StepOptions.from_config(config), size)

    def place(self, state):
        """A fresh or host state -> the canonical layout (on the mesh, replicated or FSDP)."""
        shardings = state_shardings(state, self.mesh, fsdp=self.kind == "fsdp")
        if jax.tree.structure(shardings) != jax.tree.structure(self._shardings):
            self._fns.clear()  # another model or optimizer: new compiled steps
        self._shardings = shardings
        return put(state, self._shardings)

    def to_run(self, state):
        """Canonical -> the layout the train function takes (pmap: a leading device axis)."""
        if self.kind != "pmap":
            return state
        n = jax.local_device_count()
        return jax.tree.map(lambda x: np.broadcast_to(_host(x), (n, *x.shape)), state)

    def canonical(self, state):
        """The run layout -> canonical (for checkpoints)."""
        if self.kind != "pmap":
            return state
        return put(jax.tree.map(lambda x: np.asarray(_first(x)), state), self._shardings)

    def _step(self, stacked: bool):
        key = ("train", stacked)
        if key not in self._fns:
            self._fns[key] = self._build_step(stacked)
        return self._fns[key]

    def _build_step(self, stacked: bool):
        options = self.options
        if self.kind == "pmap":
            options = dataclasses.replace(options, axis_name=AXIS)
        step = functools.partial(steps.train_step, objective=self.objective, options=options)
        if self.ensemble_size > 1:  # members' metric sums averaged
            member_steps = vmap.ensemble_step(step)

            def step(s, b):
                s, sums = member_steps(s, b)
                return s, jax.tree.map(lambda x: jnp.mean(x, 0), sums)

        fn = functools.partial(steps.multi_step, step_fn=step) if stacked else step
        if self.kind == "pmap":
            return jax.pmap(_with_synced_batchnorm(fn), axis_name=AXIS, donate_argnums=0)
        replicated = NamedSharding(self.mesh, P())
        return jax.jit(fn, out_shardings=(self._shardings, replicated), donate_argnums=0)

    def _pmap_rows(self, x, stacked: bool):
        n = jax.local_device_count()
        if stacked:  # (K, b, ...) -> (n, K, b / n, ...)
            return np.swapaxes(x.reshape(x.shape[0], n, -1, *x.shape[2:]), 0, 1)
        return x.reshape(n, -1, *x.shape[1:])

    def train(self, state, local_batches: list[dict]):
        """len(local_batches) steps (one dispatch) on this process's batches -> (state, sums)."""
        stacked = len(local_batches) > 1
        batch = steps_stack(local_batches) if stacked else local_batches[0]
        if self.kind == "pmap":
            batch = jax.tree.map(lambda x: self._pmap_rows(np.asarray(x), stacked), batch)
            state, sums = self._step(stacked)(state, batch)
            return state, self._sums(jax.tree.map(_first, sums))
        state, sums = self._step(stacked)(state, global_batch(batch, self.mesh, stacked=stacked))
        return state, self._sums(sums)

    def _sums(self, sums):
        return jax.tree.map(np.asarray, sums) if jax.process_count() > 1 else sums

    def eval(self, state, batch: dict) -> dict:
        """Metric sums on one global eval batch (every process holds it whole)."""
        n, procs = self.mesh.devices.size, jax.process_count()
        size = -(-len(batch["targets"]) // n) * n  # padded (masked) to a multiple of devices
        from dlkit.data import pad_batch

        batch = pad_batch(batch, size)
        rows = size // procs
        local = {
            k: v[jax.process_index() * rows : (jax.process_index() + 1) * rows]
            for k, v in batch.items()
        }
        if "eval" not in self._fns:
            self._fns["eval"] = self._build_eval()
        if self.kind == "pmap":
            local = jax.tree.map(lambda x: self._pmap_rows(x, False), local)
            return self._sums(jax.tree.map(_first, self._fns["eval"](state, local)))
        return self._sums(self._fns["eval"](state, global_batch(local, self.mesh)))

    def _build_eval(self):
        if self.ensemble_size > 1:
            fn = functools.partial(vmap.ensemble_eval_step, objective=self.objective)
        else:
            fn = functools.partial(steps.eval_step, objective=self.objective)
        if self.kind == "pmap":
            return jax.pmap(lambda s, b: jax.lax.psum(fn(s, b), AXIS), axis_name=AXIS)
        return jax.jit(fn, out_shardings=NamedSharding(self.mesh, P()))


def steps_stack(batches: list[dict]) -> dict:
    """K batches -> one dict of arrays (K, B, ...)."""
    return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def ensemble_state(config, create):
    """create(config), or K = config.ensemble_size members (seeds seed + k) stacked on axis 0."""
    size = int(config.get("ensemble_size", 1) or 1)
    if size == 1:
        return create(config)
    members = []
    for k in range(size):
        member_config = copy.deepcopy(config)
        member_config.seed = config.seed + k
        members.append(create(member_config))
    return members[0].replace(**vmap.stack([m.checkpoint_tree() for m in members]))


def steps_this_call(config, step: int, last: int) -> int:
    """Steps in the next dispatch: steps_per_call, cut at the next log/eval/checkpoint step."""
    k = min(int(config.get("steps_per_call", 1) or 1), last - step)
    for every in (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps):
        if every > 0:
            k = min(k, every - step % every)
    return max(k, 1)
