"""How many CPU devices a run splits its batch over when parallel.cpu_devices is 0 (auto).

One XLA:CPU step keeps only part of the machine busy (small ops run on one thread, and the
thread hand-offs between ops leave cores idle), so on a CPU with several cores the batch split
over one JAX CPU device per core (dlkit.cpu creates them) runs faster, except when:
- the step is too small to share (below MIN_FLOPS_PER_DEVICE per device, dispatch-bound);
- the model keeps batch statistics (BatchNorm) and the step is below MIN_FLOPS_PER_DEVICE_BN per
  device: every normalised layer synchronises the devices twice per step, which costs more than
  the split gains on a small step (measured on 2 cores: vgg_small, 2.8 GFLOP per device, 0.88x
  -> 0.84x PyTorch when split; resnet18, 47 GFLOP per device, 0.68x -> 0.74x; BUILD_NOTES, "CPU
  speed on any x86", auto layout);
- the batch does not divide: the largest divisor of the batch size up to the device count.
The choice depends only on the config, the model and the machine, so a rerun (resume) makes the
same one; checkpoints restore on any device count.
"""

import dataclasses

import jax

from dlkit import cpu
from dlkit.train.runner import Runner

MIN_FLOPS_PER_DEVICE = 5e7  # FLOPs of one train step per device below which one device wins
MIN_FLOPS_PER_DEVICE_BN = 1e10  # the same for models with BatchNorm statistics


@dataclasses.dataclass(frozen=True)
class Layout:
    """The devices a run uses and the one-line reason, printed once."""

    devices: int
    reason: str


def choose_devices(available: int, batch_size: int, batch_stats: bool, step_flops: float) -> Layout:
    """The rule (pure): the largest divisor of the batch up to `available` whose share of the
    step is big enough (a higher bar with batch statistics), else 1."""
    if available <= 1:
        return Layout(1, "one CPU device")
    least = MIN_FLOPS_PER_DEVICE_BN if batch_stats else MIN_FLOPS_PER_DEVICE
    fits = [n for n in range(available, 0, -1) if batch_size % n == 0]
    n = [n for n in fits if n == 1 or step_flops / n >= least][0]
    gflop = f"{step_flops / 1e9:.2g} GFLOP/step"
    if n == 1 and fits == [1]:
        return Layout(1, f"one CPU device (batch {batch_size} does not divide among {available})")
    if n == 1 and batch_stats:
        return Layout(1, f"one CPU device ({gflop} with BatchNorm: syncing would cost more)")
    if n == 1:
        return Layout(1, f"one CPU device ({gflop}: too small to split)")
    return Layout(n, f"batch {batch_size} split over {n} CPU devices ({gflop})")


def _on_cpu(options) -> bool:
    """Kind sharded, one process, on the CPU backend."""
    return (
        options.parallel.kind == "sharded"
        and jax.process_count() == 1
        and jax.default_backend() == "cpu"
    )


def auto_applies(options) -> bool:
    """parallel.cpu_devices 0 (auto), kind sharded, one process, on the CPU backend."""
    return options.parallel.cpu_devices == 0 and _on_cpu(options)


def first_devices(options) -> int | None:
    """Devices of the run's first runner: 1 under auto (until fit_to_cpu), parallel.cpu_devices
    when set (on the CPU backend, one process), else None (every device)."""
    if not _on_cpu(options) or len(jax.devices()) == 1:
        return None
    return min(options.parallel.cpu_devices, len(jax.devices())) or 1


def step_flops(train_one, state, batch: dict) -> float:
    """XLA's FLOP count of one train step (cost analysis of the lowered step; no compile)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    cost = train_one.lower(state, shapes).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"]) if cost and "flops" in cost else 0.0


def has_batch_stats(state) -> bool:
    """True when the model keeps batch statistics (a mutable collection such as BatchNorm's)."""
    return "batch_stats" in state.model_state and bool(
        jax.tree.leaves(state.model_state["batch_stats"])
    )


def fit_to_cpu(options, objective, runner, state, example: dict):
    """(runner, state, layout): the auto layout's runner and state placed on it; unchanged (and
    layout None) unless auto_applies. `runner` is the one-device runner the loop built first."""
    if not auto_applies(options):
        return runner, state, None
    available, stats = len(jax.devices()), has_batch_stats(state)
    flops = step_flops(runner.train_one, state, example) if available > 1 else 0.0
    layout = choose_devices(available, options.batch_size, stats, flops)
    if layout.devices > 1:
        runner = Runner.create(options, objective, devices=layout.devices)
        state = runner.place(state)
    return runner, state, layout


def start_cpu(*options, verbose: bool = True) -> None:
    """Before JAX starts: dlkit.cpu's policy (one CPU device per core when any run is auto) and
    at least the largest parallel.cpu_devices a run sets; prints the policy once."""
    auto = any(o.parallel.cpu_devices == 0 for o in options)
    policy = cpu.configure(split_devices=auto, verbose=verbose)
    wanted = max(o.parallel.cpu_devices for o in options)
    if wanted > policy.devices:
        threads = cpu.request_devices(wanted)
        if verbose:
            print(f"dlkit CPU devices: {wanted} (parallel.cpu_devices) [{threads}]", flush=True)
